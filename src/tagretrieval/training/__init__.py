"""Training: the LightningModule and what it trains with (loss, augmentation, schedule, callbacks, recipe), and
checkpoint loading.

==================  ===========================================================================================
module              what
==================  ===========================================================================================
``module``          ``TagRetrievalModule``: training, validation and test steps, the optimizer's groups
``losses``          triplet, InfoNCE and multi-label losses on cosine similarity (``conf/loss``)
``augment``         mel augmentation on training crops (``conf/augment``)
``schedules``       warm-up and decay on plateau (``conf/scheduler``)
``callbacks``       the best/last checkpoint and early stopping on the monitored metric
``recipe``          the budget and width chosen from the data and the device, printed at start
``checkpoints``     reading checkpoints (ours and the reference implementation's) safely
==================  ===========================================================================================

A new loss goes in ``losses`` (with ``conf/loss/NAME.yaml`` and an entry in
:data:`tagretrieval.models.spec.BUILDABLE`). May import the lower layers: :mod:`tagretrieval.runtime`,
:mod:`tagretrieval.audio`, :mod:`tagretrieval.tags`, :mod:`tagretrieval.data`, :mod:`tagretrieval.models` and
:mod:`tagretrieval.evaluation`; never the task layer. Import from the modules: this package imports nothing itself.
"""
