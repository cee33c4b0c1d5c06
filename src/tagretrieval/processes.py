"""Worker processes that never outlive the process that started them.

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

_watching = False


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
