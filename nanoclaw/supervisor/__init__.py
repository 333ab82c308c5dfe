"""The container supervisor: per-group queues, a global capacity limit, one container per group."""
from nanoclaw.supervisor import _history as history
from nanoclaw.supervisor._agent import agent_settings
from nanoclaw.supervisor._quota import measure_disk
from nanoclaw.supervisor._supervisor import ActiveRun, Supervisor, strip_internal, write_follow_up
from nanoclaw.supervisor._types import (MessageBatch, MessageSource, QueueStatistics, RunEvent, RunHandle, RunListener,
                                       RunOutcome, TaskRequest)

__all__ = ["ActiveRun", "agent_settings", "history", "measure_disk", "MessageBatch", "MessageSource", "QueueStatistics",
           "RunEvent", "RunHandle", "RunListener", "RunOutcome", "Supervisor", "TaskRequest", "strip_internal",
           "write_follow_up"]
