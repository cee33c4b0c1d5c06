"""Datasets, from their files to training batches: importers, the prepared format, the datamodule and its sampler.

One sub-package per dataset (``msd500``, ``fma``, ``mtat``, ``jamendo``, ``folder``, ``minimusicnet``, ``synthetic``;
one per ``conf/data`` file) reads that dataset's own format; each importer is a subclass of
:class:`tagretrieval.data.importer.Importer`, the skeleton that owns reuse, skip-and-report, refusal and writing, so a
new dataset is the code that reads its format and nothing else. The shared machinery sits beside them:
:mod:`~tagretrieval.data.prepared` (the one on-disk format every importer writes), :mod:`~tagretrieval.data.report`
(what an import skipped), :mod:`~tagretrieval.data.splits` (artist-disjoint splits), :mod:`~tagretrieval.data.inputs`
(what a song branch can be fed), :mod:`~tagretrieval.data.datamodule` (a prepared folder into loaders),
:mod:`~tagretrieval.data.samplers` (the (tag, song) pairs of a batch), :mod:`~tagretrieval.data.song_features` and
:mod:`~tagretrieval.data.feature_cache` (hand-crafted song features added to a prepared folder).

May import :mod:`tagretrieval.runtime`, :mod:`tagretrieval.audio` and :mod:`tagretrieval.tags`; never models,
training, inference, baselines, reports or the task layer (``tests/test_layout.py``).
"""
