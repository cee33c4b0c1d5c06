"""Datasets, from their files to training batches: importers, the prepared format, the datamodule and its sampler.

The importers (``msd500``, ``fma``, ``mtat``, ``jamendo``, ``folder``, ``minimusicnet``, ``synthetic_importer``, one per
``conf/data`` file) read a dataset's own format and write the prepared format of :mod:`tagretrieval.data.prepared`
(``tracks.csv``, ``labels.npy``, the mel store, a manifest and an import report, :mod:`tagretrieval.data.report`).
:mod:`tagretrieval.data.datamodule` reads a prepared folder into loaders; :mod:`tagretrieval.data.samplers` draws the
(tag, song) pairs of a batch; :mod:`tagretrieval.data.song_features` and :mod:`tagretrieval.data.feature_cache` add
hand-crafted song features to a prepared folder.

May import :mod:`tagretrieval.runtime`, :mod:`tagretrieval.audio` and :mod:`tagretrieval.tags`; never training,
inference, baselines, reports or the task layer (``tests/test_layout.py``; one exception is listed there).
"""
