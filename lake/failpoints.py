"""Failpoints: named boundaries where a run can be made to crash on purpose (a testing tool).

As etcd's gofail and TiKV's fail-rs do, the code marks each boundary with `Failpoints.hit`,
which does nothing unless the run was started with that point armed: `WHYLAKE_FAILPOINTS`,
read once by `jobs/options.py` into the configs the run travels with (so a worker process of
a portable runner is armed too, and the run manifest records it). Armed with `kill` (the
default), the process sends itself SIGKILL right there: no `finally`, no flush, no manifest
row, as an OOM kill or a lost machine would end it. `raise` raises `FailpointTriggered`
instead, for tests that stay in one process.

    WHYLAKE_FAILPOINTS=after-explanations-commit            # SIGKILL there
    WHYLAKE_FAILPOINTS=before-replica=raise,before-first-commit=kill
"""

from __future__ import annotations

import logging
import os
import signal
from dataclasses import dataclass

from whylake.schemas.errors import ConfigError, FailpointTriggered

log = logging.getLogger(__name__)

KILL = "kill"
RAISE = "raise"
ACTIONS = (KILL, RAISE)

# Every failpoint, where it is, in the order a batch run reaches them.
POINTS = {
    "before-first-commit": "before each data commit (explanations, dead letters): armed, the first",
    "after-explanations-commit": "after a group of explanations is durable in Iceberg",
    "after-dead-letters-commit": "after a group of dead letters is durable in Iceberg",
    "after-metrics-commit": "after a group of monitoring metrics is durable in Iceberg",
    "before-replica": "before a bulk write of committed explanations to OpenSearch",
    "before-final-manifest": "after the pipeline finished, before the run's final manifest row",
}


@dataclass(frozen=True)
class Failpoints:
    """The armed failpoints of a run, as (name, action) pairs; none by default."""

    armed: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        for name, action in self.armed:
            if name not in POINTS:
                raise ConfigError(
                    f"unknown failpoint {name!r}; the failpoints are: {', '.join(POINTS)}"
                )
            if action not in ACTIONS:
                raise ConfigError(
                    f"failpoint {name!r}: action {action!r} is not one of {', '.join(ACTIONS)}"
                )

    @classmethod
    def parse(cls, text: str) -> Failpoints:
        """`name[=action],...` (as WHYLAKE_FAILPOINTS holds it); empty text arms nothing."""
        armed = []
        for part in text.split(","):
            name, _, action = part.strip().partition("=")
            if name:
                armed.append((name.strip(), action.strip() or KILL))
        return cls(tuple(armed))

    def hit(self, name: str) -> None:
        """Do what `name` is armed with; nothing at all when it is not armed."""
        if name not in POINTS:  # a misspelt point in the code would never fire
            raise ConfigError(
                f"unknown failpoint {name!r}; the failpoints are: {', '.join(POINTS)}"
            )
        if not self.armed:
            return
        action = dict(self.armed).get(name)
        if action is None:
            return
        log.warning("failpoint %s reached: %s (WHYLAKE_FAILPOINTS)", name, action)
        if action == KILL:
            os.kill(os.getpid(), signal.SIGKILL)
        raise FailpointTriggered(f"failpoint {name} ({POINTS[name]}) was reached")

    def describe(self) -> str:
        """The armed points as WHYLAKE_FAILPOINTS writes them ('' when none)."""
        return ",".join(f"{name}={action}" for name, action in self.armed)
