"""Tag-based music retrieval: one embedding space for tags and songs (Won et al., ICASSP 2021).

``tagretrieval.load_model(path)`` loads one of our checkpoints or a reference one, in eval mode.
"""

__version__ = "0.1.0"
__all__ = ["load_model", "__version__"]


def __getattr__(name: str):
    # lazy, so that `import tagretrieval` does not import torch and lightning until needed
    if name == "load_model":
        from tagretrieval.training.checkpoints import load_model

        return load_model
    raise AttributeError(f"module 'tagretrieval' has no attribute {name!r}")
