"""Process-local progress hooks: stages report counts, a CLI (if any) listening shows them.

On the local runner the DoFns run in the CLI's process, so a listener sees every count as it
happens. On a distributed runner no listener is registered on the workers and reporting is a
no-op; the runner's UI shows Beam's metrics (the same counts, as `whylake` counters) instead.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

Listener = Callable[[str, int], None]
_listeners: list[Listener] = []
_lock = threading.Lock()


def report(stage: str, count: int) -> None:
    """Tell any listener in this process that `count` more records passed `stage`."""
    if _listeners and count:
        with _lock:
            for listener in _listeners:
                listener(stage, count)


def listen(listener: Listener) -> Callable[[], None]:
    """Register a listener; returns the function that removes it."""
    _listeners.append(listener)
    return lambda: _listeners.remove(listener)
