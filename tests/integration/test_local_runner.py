"""The local runner the batch job builds never splits an element across data-plane messages."""

from __future__ import annotations

import time
from typing import Any

import apache_beam as beam
import pytest
from apache_beam import typehints
from apache_beam.testing.util import assert_that, equal_to

from whylake.pipelines.batch import local_pipeline_options

# Longer than the gRPC data plane's periodic flush (1 s in Beam 2.77's multi-threaded
# FnApiRunner), so a flush timer, were there one, fires while an element is half written.
_PAUSE_S = 2.5


class _Slow:
    """A value whose encoding pauses half way through its element (after the key)."""

    def __init__(self, payload: bytes) -> None:
        self.payload = payload


class _SlowCoder(beam.coders.Coder):  # type: ignore[misc]
    def encode(self, value: _Slow) -> bytes:
        if value.payload.startswith(b"slow"):
            time.sleep(_PAUSE_S)
        return value.payload

    def decode(self, encoded: bytes) -> _Slow:
        return _Slow(encoded)

    def is_deterministic(self) -> bool:
        return True


def _keyed(i: int) -> tuple[str, _Slow]:
    return (f"k{i % 3}", _Slow((b"slow" if i == 7 else b"fast") + str(i).encode() * 200))


def _count(kv: tuple[str, Any]) -> tuple[str, int, int]:
    key, values = kv
    values = list(values)
    return key, len(values), sum(len(v.payload) for v in values)


@pytest.mark.integration
def test_grouped_elements_survive_an_element_that_is_slow_to_encode() -> None:
    """Beam 2.77's multi-threaded local runner flushes its gRPC output streams on a timer
    thread, also between the key and the value of one element; the runner then decodes each
    message on its own at a GroupByKey, so the element is lost or read as garbage (a bogus
    window count was a 4-16 GB list, the batch job's OOM). The job's local runner must not
    do that: every element arrives whole, however long it takes to encode. (With Beam's
    timer left on this fails: 'Invalid PaneInfoEncoding: 3' at the GroupByKey.)"""
    beam.coders.registry.register_coder(_Slow, _SlowCoder)
    n = 12
    want = [
        _count((k, [v for kk, v in map(_keyed, range(n)) if kk == k])) for k in ("k0", "k1", "k2")
    ]
    # The job's own options for two workers on the gRPC data plane (whatever the machine),
    # with Beam's timed flush turned off.
    options = local_pipeline_options(
        "FnApiRunner", ("--direct_num_workers=2", "--direct_running_mode=multi_threading")
    )
    with beam.Pipeline(options=options) as p:
        grouped = (
            p
            | beam.Create(list(range(n)))
            | beam.Map(_keyed).with_output_types(typehints.KV[str, _Slow])
            | beam.GroupByKey()
            | beam.Map(_count)
        )
        assert_that(grouped, equal_to(want))
