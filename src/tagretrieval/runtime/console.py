"""What a run prints: each message once, and no messages that are not for our users.

Three things Lightning does on its own, undone here (called by the task layer once Hydra has set up logging):

- ``import lightning`` adds a console handler to the ``lightning`` logger *and* lets its records propagate to the
  root logger, which Hydra's ``job_logging`` (``conf/hydra/default.yaml``) already prints to the console and to
  ``main.log``: every Lightning INFO line came out twice. With a root handler in place, Lightning's own console
  handler is removed, so its lines come out once, in the run's format, and still reach ``main.log``.
- Every ``Trainer`` logs an advert for ``litlogger`` (a hosted service): dropped by a filter on that one message.
- Lightning 2.6 builds torch's deprecated ``LeafSpec`` on every batch of an evaluation loop, so torch >= 2.10 warns
  on every run; the user can do nothing about it: that one warning (message, category and module) is ignored.
- Lightning warns that our module's ``on_after_batch_transfer`` is used although a datamodule is given: that is the
  design (the module brings a batch into the model's layout on the device; the datamodule has no such hook), so
  that one message is ignored too.

Anything else Lightning says (a real warning about the user's settings) still gets through.
"""

from __future__ import annotations

import logging
import re
import warnings

LIGHTNING_LOGGER = "lightning"
RANK_ZERO_LOGGER = "lightning.pytorch.utilities.rank_zero"
"""The logger of Lightning's ``rank_zero_info``, which logs the advert."""
ADVERT_PREFIX = "💡 Tip: For seamless cloud logging and experiment tracking, try installing [litlogger]"


class _DropAdvert(logging.Filter):
    """Drops the ``litlogger`` advert Lightning logs for every Trainer."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(ADVERT_PREFIX)


def configure_console() -> None:
    """Print each Lightning message once, without the advert and the deprecation warning it cannot avoid.

    Idempotent (tests run many tasks in one process). Call it after Hydra configured logging; imports Lightning.
    """
    import lightning  # noqa: F401  (its import adds the handler removed below)

    if logging.getLogger().handlers:  # Hydra's job logging (or any root handler) prints Lightning's records
        own = logging.getLogger(LIGHTNING_LOGGER)
        for handler in list(own.handlers):
            if type(handler) is logging.StreamHandler:  # Lightning's console handler; a file handler stays
                own.removeHandler(handler)
        own.propagate = True
    rank_zero = logging.getLogger(RANK_ZERO_LOGGER)
    if not any(isinstance(f, _DropAdvert) for f in rank_zero.filters):
        rank_zero.addFilter(_DropAdvert())
    warnings.filterwarnings(
        "ignore", message=re.escape("`isinstance(treespec, LeafSpec)` is deprecated"), category=FutureWarning,
        module=r"lightning\.pytorch\.utilities\._pytree",
    )
    warnings.filterwarnings(
        "ignore", category=UserWarning, module=r"lightning\.pytorch\.trainer\.connectors\.data_connector",
        message=re.escape("You have overridden `on_after_batch_transfer` in `LightningModule` but have passed in a "
                          "`LightningDataModule`"),
    )
