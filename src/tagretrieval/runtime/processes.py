"""Worker processes: how they start (:func:`resolve_start_method`), and that they never outlive the process that
started them (:func:`exit_with_parent`). Imports nothing heavy (``main.py``'s preflight uses it before torch).

A process killed with SIGKILL (the OOM killer, ``scancel`` after its grace period, a test) cannot stop its workers.
Workers forked from it notice through their parent pid, but those started by a fork server have the fork server as
their parent: a DataLoader worker (torch's watchdog checks the parent pid) or a process-pool worker would then run
on, and keep the fork server, the shared memory and any pipe they inherited (a caller's stdout) alive forever.
:func:`exit_with_parent` ends such a process as soon as its multiprocessing parent is gone.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import threading

from tagretrieval.runtime.errors import ConfigError

_watching = False


def resolve_start_method(start_method: str | None) -> str:
    """The start method of loader workers (``loader.start_method``): ``start_method`` if this platform has it
    (``multiprocessing.get_all_start_methods()``), or for None ``forkserver`` where the platform has it, else
    ``spawn`` (why: :mod:`tagretrieval.data.datamodule`).

    Raises:
        ConfigError: a start method this platform lacks.
    """
    available = multiprocessing.get_all_start_methods()
    if start_method is None:
        return "forkserver" if "forkserver" in available else "spawn"
    if start_method not in available:
        raise ConfigError(f"loader.start_method={start_method!r}: one of {', '.join(available)} on this platform, "
                          "or null")
    return start_method


def exit_with_parent() -> None:
    """In a multiprocessing child (spawn, forkserver or fork), exit (status 1) as soon as the process that started
    it is gone; does nothing in a process started otherwise, and nothing a second time in the same process.

    The watch is a daemon thread waiting on the parent's sentinel: no polling, nothing to stop.
    """
    global _watching
    parent = multiprocessing.parent_process()
    if parent is None or _watching:
        return
    _watching = True

    def watch() -> None:
        multiprocessing.connection.wait([parent.sentinel])
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()
