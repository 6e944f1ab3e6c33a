"""Read a Kafka topic in Beam (Python-native, confluent-kafka) and commit offsets after Iceberg.

Three transforms, each in its own module, used together by `pipelines/streaming.py`:

- `ReadFromKafkaTopic`: an unbounded splittable DoFn, one restriction for all the topic's
  partitions (each partition's next offset, claimed in order), one watermark per partition
  (bounded out-of-orderness over the records' Kafka timestamps, advanced to wall-clock time
  while the partition is caught up) whose minimum is the reader's watermark, and a checkpoint
  (`ProcessContinuation.resume`) every poll so each bundle stays short. One restriction, not
  one per partition: Prism keeps the watermark of the last bundle's residuals, so with one
  per partition an idle partition's watermark overtook another's backlog (records lost). It
  emits one `KafkaBatch` per poll, partition and event-time window (not one per message).
  Each message carries `claimed_from`: the first offset it covers, so the messages of a
  partition tile its offsets without gaps (control records, compaction).
  Nothing is emitted behind the reader's watermark: a record behind it by less than the
  allowed lateness is stamped at the watermark (it joins the window open there, its
  event_ts unchanged), and records whose window ended more than the allowed lateness before
  it come in a `late` batch stamped at the watermark, so the runner cannot drop them unseen.
- `ParseKafkaRecords`: JSON -> Arrow RecordBatches of the inference schema (msgspec, column
  by column: `decode.py`), one batch per window per bundle; malformed values and late
  records -> dead letters; and one offset ledger per bundle: which offsets fell into which
  window.
- `CommitKafkaOffsets`: commits, per partition, the offset below which every record's window
  is *finished* — the watermark after the Iceberg commits has passed the window's end plus the
  allowed lateness, so every pane of it, on time or late, is durable in Iceberg.

Exactly once in the tables, argued:

1. Delivery is at least once: the reader starts at the group's committed offset, and an
   offset is committed only when every record below it belongs to a finished window. The
   committer's input is the ledger flattened with the Iceberg commit results and the
   replica's write outcomes, so its event-time timer for window W (at W.end + allowed
   lateness + margin) cannot fire before the commit and replica steps have processed every
   element of W: a Beam watermark never passes an element in flight that was on time, and
   the reader emits no element behind its watermark (an element behind the watermark, a
   late one, holds nothing back: the barrier could pass it on its way). A window re-read after
   a crash is re-committed (a no-op) and re-indexed (same document ids).
2. Redelivered records are deduplicated by the tables: explanation and dead-letter ids are
   deterministic (input + model + explainer config; stage + source + record), and
   `lake.commit.append_once` appends only keys that are not yet present, re-checking on retry.
3. The sample itself is reproducible: priorities are hashes of (seed, request id), and a
   window that was not finished before a restart is re-read whole (its records all lie at or
   after the committed offset), so it is sampled from the same population again. Records of
   windows that *were* finished but lie after the committed offset (out-of-order neighbours)
   are dropped on re-read: the finished windows are listed in the offset commit's metadata,
   each with the highest offset it owns, so a record of that time stamped into a later window
   (it came in behind the watermark) is read again rather than skipped with it.

Known limit: a window with late panes that was committed pane by pane but not finished when
the job died is re-read as one pane on restart, so its late records may be sampled with a
different (still correct for that pane) inclusion probability; ids stay unique.
"""

from whylake.transforms.kafka.config import KafkaBatch, KafkaReadConfig, KafkaRecord
from whylake.transforms.kafka.ledger import OffsetLedger, advance_frontier
from whylake.transforms.kafka.offsets import (
    CommitKafkaOffsets,
    CommitOffsetsConfig,
    CommittedOffset,
)
from whylake.transforms.kafka.parse import ParseConfig, ParseKafkaRecords
from whylake.transforms.kafka.positions import committed_positions
from whylake.transforms.kafka.source import ReadFromKafkaTopic

__all__ = [
    "CommitKafkaOffsets",
    "CommitOffsetsConfig",
    "CommittedOffset",
    "KafkaBatch",
    "KafkaReadConfig",
    "KafkaRecord",
    "OffsetLedger",
    "ParseConfig",
    "ParseKafkaRecords",
    "ReadFromKafkaTopic",
    "advance_frontier",
    "committed_positions",
]
