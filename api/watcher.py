"""Watch the lake for the API: new explanations (for the event stream), replica freshness, reviews.

One background thread polls the Iceberg catalog (pyiceberg is synchronous) and hands what it
found to the event loop; request handlers only read its published state.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pyiceberg.catalog import Catalog

from whylake.lake.catalog import EXPLANATIONS, REVIEWS
from whylake.lake.changes import appended_rows, snapshots_after
from whylake.lake.opensearch import OpenSearchConfig
from whylake.lake.reconstruct import committed_time, jsonable

log = logging.getLogger(__name__)
Row = dict[str, Any]

# What an event of the stream carries: enough to list and open the record, nothing tier 3.
EVENT_COLUMNS = (
    "explanation_id",
    "tenant_id",
    "request_id",
    "event_ts",
    "explained_at",
    "model_id",
    "model_version",
    "prediction",
    "predicted_class",
    "summary",
    "sampling_reason",
    "review_route",
)


@dataclass(frozen=True)
class Event:
    """One newly committed explanation, for its tenant's stream."""

    tenant_id: str
    snapshot_id: int
    payload: Row

    @property
    def event_id(self) -> str:
        return f"{self.snapshot_id}:{self.payload['explanation_id']}"


@dataclass
class _Pending:
    snapshot_id: int
    ids: list[str]


@dataclass
class LakeState:
    """What the watcher last saw; read by request handlers (each field replaced atomically)."""

    snapshot_id: int | None = None
    committed_at: datetime | None = None
    replicated_through: int | None = None  # newest snapshot whose rows the replica holds
    reviews: dict[tuple[str, str], list[Row]] = field(default_factory=dict)
    checked_at: datetime | None = None

    @property
    def replica_fresh(self) -> bool:
        """The replica holds every row of the current snapshot (and, the writer replicating
        in commit order, of the ones before it)."""
        return self.snapshot_id is not None and self.replicated_through == self.snapshot_id


class LakeWatcher:
    """Polls the explanations and reviews tables every `poll_s` seconds.

    New append snapshots of `whylake.explanations` become events (per tenant) and replica
    checks: the replica is fresh once OpenSearch holds every explanation id (within its
    retention window) of the current snapshot. New reviews are indexed in memory, so a lookup
    adds them without another Iceberg scan.
    """

    def __init__(
        self,
        catalog: Catalog,
        on_events: Callable[[list[Event]], None],
        *,
        opensearch: OpenSearchConfig | None = None,
        poll_s: float = 0.5,
        retention_days: int = 30,
    ) -> None:
        self.catalog = catalog
        self.on_events = on_events
        self.opensearch = opensearch
        self.poll_s = poll_s
        self.retention = timedelta(days=retention_days)
        self.state = LakeState()
        self._last_explanations: int | None = None
        self._last_reviews: int | None = None
        self._reviews_loaded = False
        self._pending: list[_Pending] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._client: Any = None
        self.first_tick = threading.Event()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="whylake-lake-watcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._client is not None:
            self._client.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:  # noqa: BLE001 - a failed poll is retried; the API keeps serving
                log.exception("lake watcher poll failed; retrying in %.1fs", self.poll_s)
            self.first_tick.set()
            self._stop.wait(self.poll_s)

    def tick(self) -> None:
        """One poll: new explanation snapshots -> events and replica checks; new reviews."""
        table = self.catalog.load_table(EXPLANATIONS)
        new = snapshots_after(table, self._last_explanations)
        events: list[Event] = []
        for snapshot in new:
            rows = appended_rows(table, snapshot, EVENT_COLUMNS).to_pylist()
            if self._last_explanations is not None:  # at start-up, report from now on
                events.extend(
                    Event(r["tenant_id"], snapshot.snapshot_id, jsonable(r)) for r in rows
                )
            cutoff = datetime.now(UTC) - self.retention
            ids = [r["explanation_id"] for r in rows if r["event_ts"] >= cutoff]
            self._pending.append(_Pending(snapshot.snapshot_id, ids))
        current = table.current_snapshot()
        if current is not None:
            self._last_explanations = current.snapshot_id
        replicated = self._check_replica()
        self._refresh_reviews()
        self.state = LakeState(
            snapshot_id=current.snapshot_id if current else None,
            committed_at=committed_time(current) if current else None,
            replicated_through=replicated,
            reviews=self.state.reviews,
            checked_at=datetime.now(UTC),
        )
        if events:
            self.on_events(events)

    def _check_replica(self) -> int | None:
        """Advance the replicated-through mark over pending snapshots the replica now holds."""
        mark = self.state.replicated_through
        if self.opensearch is None:
            return None
        while self._pending:
            head = self._pending[0]
            try:
                if not self._replica_holds(head.ids):
                    break
            except Exception as exc:  # noqa: BLE001 - replica down: serve from Iceberg
                log.warning("replica check failed (%s): lookups read Iceberg", exc)
                return None
            mark = head.snapshot_id
            self._pending.pop(0)
        return mark

    def _replica_holds(self, ids: list[str]) -> bool:
        if not ids:
            return True
        assert self.opensearch is not None
        if self._client is None:
            self._client = self.opensearch.client()
        found = 0
        for start in range(0, len(ids), 10_000):
            chunk = ids[start : start + 10_000]
            response = self._client.count(
                index=f"{self.opensearch.index_prefix}-*",
                body={"query": {"ids": {"values": chunk}}},
                params={"ignore_unavailable": "true", "allow_no_indices": "true"},
            )
            found += int(response["count"])
        return found >= len(set(ids))

    def _refresh_reviews(self) -> None:
        """New reviews into the in-memory index (all of them on the first poll)."""
        table = self.catalog.load_table(REVIEWS)
        current = table.current_snapshot()
        if current is None:
            return
        if not self._reviews_loaded:
            rows = table.scan().to_arrow().to_pylist()
            self._reviews_loaded = True
        else:
            rows = []
            for snapshot in snapshots_after(table, self._last_reviews):
                if snapshot.snapshot_id != self._last_reviews:
                    rows.extend(appended_rows(table, snapshot).to_pylist())
        self._last_reviews = current.snapshot_id
        if not rows:
            return
        index: dict[tuple[str, str], list[Row]] = defaultdict(list)
        for key, value in self.state.reviews.items():
            index[key] = list(value)
        seen = {r["review_id"] for group in index.values() for r in group}
        for row in rows:
            if row["review_id"] not in seen:
                index[(row["tenant_id"], row["request_id"])].append(row)
        for group in index.values():
            group.sort(key=lambda r: (r["reviewed_at"], r["review_id"]))
        self.state = LakeState(
            snapshot_id=self.state.snapshot_id,
            committed_at=self.state.committed_at,
            replicated_through=self.state.replicated_through,
            reviews=dict(index),
            checked_at=self.state.checked_at,
        )


class Subscriber:
    """One open event stream: a bounded queue of its tenant's events."""

    def __init__(self, tenant_id: str, maxsize: int) -> None:
        self.tenant_id = tenant_id
        self.queue: asyncio.Queue[Event | None] = asyncio.Queue(maxsize=maxsize)
        self.overflowed = False


class EventHub:
    """Fans events out to the subscribers of their own tenant only (on the event loop)."""

    def __init__(self, queue_size: int = 10_000) -> None:
        self.queue_size = queue_size
        self.loop: asyncio.AbstractEventLoop | None = None
        self._subscribers: dict[str, set[Subscriber]] = defaultdict(set)
        self.published = 0

    def subscribe(self, tenant_id: str) -> Subscriber:
        sub = Subscriber(tenant_id, self.queue_size)
        self._subscribers[tenant_id].add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        self._subscribers[sub.tenant_id].discard(sub)

    def subscribers(self, tenant_id: str | None = None) -> int:
        if tenant_id is not None:
            return len(self._subscribers.get(tenant_id, ()))
        return sum(len(s) for s in self._subscribers.values())

    def publish_threadsafe(self, events: list[Event]) -> None:
        """Called from the watcher thread."""
        if self.loop is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self._deliver, events)

    def _deliver(self, events: list[Event]) -> None:
        for event in events:
            self.published += 1
            for sub in list(self._subscribers.get(event.tenant_id, ())):
                if sub.overflowed:
                    continue
                try:
                    sub.queue.put_nowait(event)
                except asyncio.QueueFull:
                    # A client too slow to keep up is told and disconnected, never silently
                    # skipped: it reconnects and reads what it missed from the lookup API.
                    sub.overflowed = True
                    while not sub.queue.empty():
                        sub.queue.get_nowait()
                    sub.queue.put_nowait(None)
