"""Process plumbing, below everything else: what a run needs whatever it trains or evaluates.

==================  ===========================================================================================
module              what
==================  ===========================================================================================
``errors``          the user-error classes ``main.py`` prints as one line (``ConfigError``, ``DataError``, ...)
``console``         what a run prints at start (settings blocks) and the progress-bar switch
``files``           atomic writes (text, JSON, ``.npy``, ``.npz``): nothing half-written survives a crash
``lock``            the advisory file lock that serialises imports into one prepared folder
``processes``       worker start methods and the watch that makes workers exit with their parent
``launch``          how ranks and sweep jobs start (torchrun, SLURM, Lightning, submitit)
``loggers``         the experiment trackers (TensorBoard, CSV, MLflow, W&B, Neptune offline)
``preflight``       checks of a run's settings before torch is imported (called by ``main.py``)
==================  ===========================================================================================

May import: the standard library and third-party packages only, never another part of tagretrieval (``preflight``
reads a ``DictConfig``: it is the entry point's helper). Nothing is imported here, so that ``preflight`` runs before
torch and Lightning are loaded.
"""
