"""The cluster status a manager reports (``status`` in docs/PROTOCOL.md §7.2)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Tuple

from . import _wire
from .errors import ProtocolError

__all__ = ["Status", "TaskLimitInfo", "WorkerInfo"]


@dataclass(frozen=True)
class TaskLimitInfo:
    """Where one task name with limits (``[limits.NAME]`` in the manager's
    config) stands, in :attr:`Status.limits`; the maxima and ``rate`` are
    None when that limit is not set, ``queued`` when not counted."""

    task: str
    max_running: Optional[int]
    running: int
    max_queued: Optional[int]
    queued: Optional[int]
    rate: Optional[str]
    rate_limited: int

    @classmethod
    def from_wire(cls, e: Any) -> "TaskLimitInfo":
        """Checks and converts one decoded ``limits`` entry."""
        if not isinstance(e, dict):
            raise ProtocolError("a limits entry is not a map")
        rate = e.get("rate")
        if rate is not None and not isinstance(rate, str):
            raise ProtocolError("limits[].rate is not a string")
        return cls(
            task=_wire.get_str(e, "task"),
            max_running=_wire.get_opt_int(e, "max_running"),
            running=_wire.get_int(e, "running", default=0),
            max_queued=_wire.get_opt_int(e, "max_queued"),
            queued=_wire.get_opt_int(e, "queued"),
            rate=rate,
            rate_limited=_wire.get_int(e, "rate_limited", default=0),
        )


@dataclass(frozen=True)
class WorkerInfo:
    """One worker in :attr:`Status.worker_list`."""

    id: int
    address: str
    capacity: int
    in_flight: int
    avg_ms: float
    tasks: Tuple[str, ...]
    eval: bool
    draining: bool
    tasks_total: int

    @classmethod
    def from_wire(cls, w: Any) -> "WorkerInfo":
        """Checks and converts one decoded ``worker_list`` entry."""
        if not isinstance(w, dict):
            raise ProtocolError("a worker_list entry is not a map")
        tasks = w.get("tasks")
        if not isinstance(tasks, list):
            raise ProtocolError("worker_list[].tasks is not an array")
        names = tuple(_wire.get_str({"task": t}, "task") for t in tasks)
        return cls(
            id=_wire.get_int(w, "id"),
            address=_wire.get_str(w, "address"),
            capacity=_wire.get_int(w, "capacity", _wire.U32_MAX),
            in_flight=_wire.get_int(w, "in_flight", _wire.U32_MAX),
            avg_ms=_wire.get_float(w, "avg_ms"),
            tasks=names,
            eval=_wire.get_bool(w, "eval"),
            draining=_wire.get_bool(w, "draining"),
            tasks_total=_wire.get_int(w, "tasks_total", _wire.U32_MAX, default=len(names)),
        )


@dataclass(frozen=True)
class Status:
    """A snapshot of the cluster: counts are exact, ``worker_list`` is a
    sample of at most 100 workers, the busiest first. The fields are those
    of ``argon status --json``; ``retrying`` counts tasks waiting out the
    backoff before a retry, ``awaiting_provider`` tasks waiting for a worker
    that provides them, ``scheduled`` delayed tasks not yet due, ``limits``
    the task names with limits
    (docs/PROTOCOL.md §7.2)."""

    workers: int
    capacity: int
    in_flight: int
    queued: int
    queue_limit: int
    queued_by_priority: Dict[str, int]
    avg_task_ms: float
    completed: int
    failed: int
    denied: int
    retrying: int
    awaiting_provider: int
    scheduled: int
    worker_list: Tuple[WorkerInfo, ...]
    worker_list_total: int
    worker_list_truncated: bool
    limits: Tuple[TaskLimitInfo, ...]

    @classmethod
    def from_wire(cls, s: Mapping[Any, Any]) -> "Status":
        """Checks and converts a decoded ``status`` map; fields newer
        managers added read as 0 or false when absent."""
        byp = s.get("queued_by_priority")
        if not isinstance(byp, dict):
            raise ProtocolError("status.queued_by_priority is not a map")
        wl = s.get("worker_list")
        if not isinstance(wl, list):
            raise ProtocolError("status.worker_list is not an array")
        limits = s.get("limits", [])
        if not isinstance(limits, list):
            raise ProtocolError("status.limits is not an array")
        return cls(
            workers=_wire.get_int(s, "workers"),
            capacity=_wire.get_int(s, "capacity"),
            in_flight=_wire.get_int(s, "in_flight"),
            queued=_wire.get_int(s, "queued"),
            queue_limit=_wire.get_int(s, "queue_limit"),
            queued_by_priority={p: _wire.get_int(byp, p, default=0) for p in ("high", "normal", "low")},
            avg_task_ms=_wire.get_float(s, "avg_task_ms"),
            completed=_wire.get_int(s, "completed"),
            failed=_wire.get_int(s, "failed", default=0),
            denied=_wire.get_int(s, "denied"),
            retrying=_wire.get_int(s, "retrying", default=0),
            awaiting_provider=_wire.get_int(s, "awaiting_provider", default=0),
            scheduled=_wire.get_int(s, "scheduled", default=0),
            worker_list=tuple(WorkerInfo.from_wire(w) for w in wl),
            worker_list_total=_wire.get_int(s, "worker_list_total", default=0),
            worker_list_truncated=_wire.get_bool(s, "worker_list_truncated", default=False),
            limits=tuple(TaskLimitInfo.from_wire(e) for e in limits),
        )
