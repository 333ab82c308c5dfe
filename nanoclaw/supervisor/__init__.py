"""The container supervisor: per-group queues, a global capacity limit, one container per group.

Work arrives submitted (`Supervisor.submit`) or from a WorkFeed (`Supervisor.notify`); each run
reports to its work's RunSink, and every run's RunEvents go to subscribers.
"""
from nanoclaw.supervisor import _history as history
from nanoclaw.supervisor._agent import agent_settings
from nanoclaw.supervisor._queue import ActiveRun
from nanoclaw.supervisor._quota import measure_disk
from nanoclaw.supervisor._supervisor import Supervisor
from nanoclaw.supervisor._types import (FollowUp, InputWriter, QueueStatistics, RunEvent, RunHandle, RunListener,
                                       RunOutcome, RunSink, Work, WorkFeed)

__all__ = ["ActiveRun", "FollowUp", "InputWriter", "QueueStatistics", "RunEvent", "RunHandle", "RunListener",
           "RunOutcome", "RunSink", "Supervisor", "Work", "WorkFeed", "agent_settings", "history", "measure_disk"]
