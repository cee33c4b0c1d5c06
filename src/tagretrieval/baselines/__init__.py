"""Baselines that place the retrieval models' numbers (``python main.py mode=baseline +baseline=NAME``).

==========================  =====================================================================
module                      what
==========================  =====================================================================
``sources``                 song vectors: hand-crafted, CF, precomputed features, a checkpoint
``taggers``                 scikit-learn one-vs-rest taggers, chosen on valid, retrieval metrics
``analysis``                confusion matrix, kNN + Jaccard index, PCA explained variance
``probe``                   linear probe, kNN and PCA of any song vectors
``topics``                  LSI and LDA topics of the tag lists (gensim)
``bce_cnn``                 the short-chunk CNN trained as a sigmoid/BCE tagger (Lightning)
``fma_genres``              the FMA paper's top-genre baselines (a command, docs/datasets/fma.md)
``tasks``                   the Hydra task (``mode=baseline``)
==========================  =====================================================================

The hand-crafted features they use are :mod:`tagretrieval.audio.handcrafted` (librosa descriptors of a clip)
and :mod:`tagretrieval.data.feature_cache` (those of a whole prepared dataset, cached and resumable).

Usage: ``docs/usage/baselines.md``. Nothing here reads Hydra except ``tasks``. Import from the modules
(``from tagretrieval.baselines.taggers import SklearnTaggerBaseline``): this package imports nothing itself, so
that the feature-extraction worker processes start without torch, Lightning or gensim.
"""
