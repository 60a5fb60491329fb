"""The journal: every sequenced command, durable before anything it causes is sent.

commandlog: one framed file of [seq, ts_ns, command] and [first_seq, ts_ns, order-command
records] records (the single-file log `cxe demo
--out` writes); segments: a directory of such files, one or more per trading day, read as one
stream; snapshot: atomic snapshot files carrying the seq and state hash they cover;
recovery: the latest snapshot plus the journal after it. Framing: engine.framing.
"""

from engine.framing import CorruptLog
from engine.journal.commandlog import (
    BadBatch,
    BadStamp,
    BatchRecord,
    CommandLog,
    LogRecord,
    RecordingExchange,
    read_log,
)
from engine.journal.segments import (
    Journal,
    read_commands,
    read_journal,
    replay,
    replay_events,
)

__all__ = [
    "BadBatch",
    "BadStamp",
    "BatchRecord",
    "CommandLog",
    "CorruptLog",
    "Journal",
    "LogRecord",
    "RecordingExchange",
    "read_commands",
    "read_journal",
    "read_log",
    "replay",
    "replay_events",
]
