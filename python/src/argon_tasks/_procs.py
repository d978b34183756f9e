"""Child processes for plain task functions registered with ``process=True``.

Such a function runs in a child process, so CPU-bound Python does not hold
the worker's GIL, and a run that times out or is cancelled is stopped by
killing its process (a thread cannot be stopped). The pool starts at most
one process per slot, on first use, with the ``spawn`` method: a child
imports the function's module afresh and finds the function by its module
and qualified name, so the function must be defined at module level. A
process serves one run at a time and is reused; a killed or crashed one is
replaced by a new one on the next run. Arguments and results travel
pickled over a pipe.
"""

from __future__ import annotations

import importlib
import multiprocessing
import pickle
import signal
import threading
from multiprocessing.connection import Connection
from typing import Any, Callable, List, Optional, Set, Tuple

from ._text import MAX_ERROR_BYTES, clip, error_text

__all__ = ["ProcessPool", "function_ref"]

_CTX = multiprocessing.get_context("spawn")
_JOIN_WAIT = 5.0
_TOO_LONG = "bad message length"
"""What ``Connection.recv_bytes`` raises (OSError) for a message past its
``maxlength``, before reading its body."""


def function_ref(fn: Callable[..., Any]) -> Tuple[str, str]:
    """(module, qualified name) by which a child process finds ``fn``;
    ValueError for a function a fresh import cannot reach."""
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", None)
    if not isinstance(module, str) or not isinstance(qualname, str) or "<" in qualname:
        raise ValueError(
            f"{fn!r} cannot run in a process: a process task must be a function defined at module level"
        )
    if module == "__main__":
        raise ValueError(
            f"{qualname} cannot run in a process: it is defined in the script being run (__main__); "
            "define it in a module that the worker imports"
        )
    return module, qualname


def _resolve(module: str, qualname: str) -> Callable[[Any], Any]:
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    # @app.task() replaces the function by a wrapper in its module.
    inner = getattr(obj, "__argon_fn__", None)
    fn = inner if inner is not None else obj
    if not callable(fn):
        raise TypeError(f"{module}.{qualname} is not callable")
    return fn  # type: ignore[no-any-return]


def _child(conn: Connection) -> None:
    """A child process's main loop: one job at a time until the pipe ends."""
    # The parent drains on SIGINT/SIGTERM and ends its children itself; a
    # terminal's Ctrl-C, sent to the whole process group, must not kill
    # runs the drain waits for.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    fns: dict[Tuple[str, str], Callable[[Any], Any]] = {}
    while True:
        try:
            module, qualname, task, args = conn.recv()
        except (EOFError, OSError):
            return
        msg: Tuple[str, Any]
        try:
            fn = fns.get((module, qualname))
            if fn is None:
                fn = fns[(module, qualname)] = _resolve(module, qualname)
            msg = ("done", fn(args))
        except (Exception, SystemExit) as e:
            msg = ("failed", error_text(task, e))
        try:
            conn.send(msg)
        except (EOFError, OSError):
            return
        except Exception as e:  # the result does not pickle; nothing was sent
            conn.send(("failed", clip(f"task {task} returned a result that cannot be sent: {e}", MAX_ERROR_BYTES)))
        del msg


class _Proc:
    __slots__ = ("process", "conn")

    def __init__(self) -> None:
        parent, child = _CTX.Pipe()
        self.process = _CTX.Process(target=_child, args=(child,), name="argon-task-process", daemon=True)
        self.process.start()
        child.close()
        self.conn: Connection = parent

    def end(self) -> None:
        self.conn.close()
        if self.process.is_alive():
            self.process.kill()
        self.process.join(_JOIN_WAIT)


class Job:
    """A run as the pool sees it: the process serving it, and whether it
    was stopped (a stopped job's process is killed)."""

    __slots__ = ("proc", "stopped")

    def __init__(self) -> None:
        self.proc: Optional[_Proc] = None
        self.stopped = False


class ProcessPool:
    """Up to ``size`` child processes; :meth:`call` is made from the
    worker's threads (one per run), :meth:`kill` from anywhere. A result
    whose pickle passes ``max_result`` bytes is not read (its process is
    ended) and fails the run: it could not be sent in a frame anyway."""

    def __init__(self, size: int, max_result: int) -> None:
        self._size = size
        self._max_result = max_result
        self._lock = threading.Lock()
        self._idle: List[_Proc] = []
        self._busy: Set[_Proc] = set()
        self._closed = False

    def call(self, job: Job, ref: Tuple[str, str], task: str, args: Any) -> Tuple[str, Any]:
        """Runs ``ref`` on ``args`` in a process; ("done", value) or
        ("failed", text). Blocks until the run ends or is killed."""
        with self._lock:
            if job.stopped or self._closed:
                return "failed", "stopped before it started"
            proc = self._idle.pop() if self._idle else None
        if proc is None:
            try:
                proc = _Proc()
            except OSError as e:
                return "failed", f"cannot start a process for task {task}: {e}"
        with self._lock:
            self._busy.add(proc)
            job.proc = proc
            stopped = job.stopped or self._closed
        if stopped:
            self._retire(proc, job)
            return "failed", "stopped before it started"
        try:
            proc.conn.send((ref[0], ref[1], task, args))
            data = proc.conn.recv_bytes(self._max_result)
        except (EOFError, OSError) as e:
            # The process ended (killed, crashed), or the result is too long
            # to read: the pipe is out of step then, the process goes too.
            self._retire(proc, job)
            if isinstance(e, OSError) and str(e) == _TOO_LONG:
                return "failed", f"task {task} returned a result larger than {self._max_result} bytes pickled"
            return "failed", f"the process running task {task} ended (exit code {proc.process.exitcode})"
        kind, value = pickle.loads(data)
        del data
        with self._lock:
            self._busy.discard(proc)
            job.proc = None
            if self._closed or len(self._idle) >= self._size:
                keep = False
            else:
                self._idle.append(proc)
                keep = True
        if not keep:
            proc.end()
        return kind, value

    def _retire(self, proc: _Proc, job: Job) -> None:
        with self._lock:
            self._busy.discard(proc)
            job.proc = None
        proc.end()

    def kill(self, job: Job) -> None:
        """Stops ``job``: kills its process if it has one (its
        :meth:`call` then returns), or keeps it from starting."""
        with self._lock:
            job.stopped = True
            proc = job.proc
        if proc is not None:
            proc.process.kill()  # no signal once the process was reaped

    def shutdown(self) -> None:
        """Ends every process: idle ones at once, busy ones killed."""
        with self._lock:
            self._closed = True
            procs = self._idle + list(self._busy)
            self._idle = []
        for p in procs:
            if p.process.is_alive():
                p.process.kill()
        for p in procs:
            p.process.join(_JOIN_WAIT)
