"""Serving Python functions as Argon tasks: :class:`Worker`.

A worker connects to the manager, registers its task names and ``capacity``
slots, and runs what the manager assigns: ``async def`` functions as asyncio
tasks, plain functions on a pool of ``capacity`` threads (or on the event
loop itself with ``thread=False``, or in child processes with
``process=True``, see :mod:`argon_tasks._procs`). It enforces each run's
timeout, stops runs the manager cancels (a cancel that comes before an
``async def`` run's first step included), sends heartbeats, reconnects on a
logarithmic backoff when the manager goes away, and on stop (SIGINT/SIGTERM
under :meth:`Worker.run`) drains: it tells the manager, lets running tasks
finish for up to ``stop_timeout`` seconds, and leaves.

A task function takes one argument, the task's arguments as sent by the
client, and returns its result; an exception it raises becomes the task's
error. :func:`current_run` tells a running function about its run,
including whether it was cancelled (for plain functions in threads, which
cannot be interrupted from outside).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import logging
import math
import os
import queue
import random
import re
import signal
import threading
import time
from collections import deque
from typing import Any, Awaitable, Callable, Deque, Dict, List, Optional, Tuple, TypeVar, Union

from . import _procs, _wire
from ._core import AGENT, resolve_key, resolve_mgr
from ._link import Link
from ._text import MAX_ERROR_BYTES as _MAX_ERROR_BYTES
from ._text import clip, error_text, peer_text
from .errors import ArgonError, AuthFailed, ConnectError, ConnectionLost, FrameTooLarge, ProtocolError, RegistrationRefused

__all__ = ["Worker", "RunInfo", "current_run"]

log = logging.getLogger("argon_tasks")

F = TypeVar("F", bound=Callable[..., Any])

_TASK_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,128}\Z")
_MAX_CAPACITY = 65536
_RETRYABLE_REFUSAL = "is already known to this manager"
# {"finished": {"run_id": ID, "outcome": {"done": {"value": VALUE}}}} around ID and VALUE.
_FINISHED_HEAD = b"\x81\xa8finished\x82\xa6run_id"
_DONE_VALUE = b"\xa7outcome\x81\xa4done\x81\xa5value"


class RunInfo:
    """What a task function can learn about its run through
    :func:`current_run`: ``run_id``, ``task``, ``deadline`` (a
    ``time.monotonic()`` value, or None) and ``cancelled``, a
    :class:`threading.Event` set when the run times out, is cancelled or the
    worker stops."""

    __slots__ = ("run_id", "task", "deadline", "_event", "_stopped")

    def __init__(self, run_id: int, task: str, deadline: Optional[float]) -> None:
        self.run_id = run_id
        self.task = task
        self.deadline = deadline
        self._event: Optional[threading.Event] = None
        self._stopped = False

    @property
    def cancelled(self) -> threading.Event:
        """Set once the run should stop (made on first use: most runs never
        look)."""
        with _EVENT_LOCK:
            if self._event is None:
                self._event = threading.Event()
                if self._stopped:
                    self._event.set()
            return self._event

    def _stop(self) -> None:
        with _EVENT_LOCK:
            self._stopped = True
            if self._event is not None:
                self._event.set()


_EVENT_LOCK = threading.Lock()


_current: "contextvars.ContextVar[Optional[RunInfo]]" = contextvars.ContextVar("argon_run", default=None)


def current_run() -> Optional[RunInfo]:
    """The run the calling task function serves, or None outside one."""
    return _current.get()


class _Task:
    __slots__ = ("name", "fn", "is_async", "thread", "ref")

    def __init__(
        self, name: str, fn: Callable[[Any], Any], is_async: bool, thread: bool, ref: Optional[Tuple[str, str]] = None
    ) -> None:
        self.name = name
        self.fn = fn
        self.is_async = is_async
        self.thread = thread
        # Where a child process finds the function, for a process task.
        self.ref = ref


class _Run:
    __slots__ = ("info", "slot", "task", "link", "stop_reason", "atask", "timer", "done", "warned", "job")

    def __init__(self, info: RunInfo, slot: int, task: Optional[_Task], link: Link) -> None:
        self.info = info
        self.slot = slot
        self.task = task
        self.link: Optional[Link] = link
        self.stop_reason: Optional[str] = None
        self.atask: Optional["asyncio.Task[None]"] = None
        self.timer: Optional[asyncio.TimerHandle] = None
        self.done = False
        self.warned = False
        self.job: Optional[_procs.Job] = None


class _Pool:
    """``size`` daemon threads running blocking task functions; results go
    back to the event loop in batches."""

    def __init__(
        self,
        size: int,
        loop: asyncio.AbstractEventLoop,
        deliver: Callable[[_Run, str, Any], None],
        procs: Optional[_procs.ProcessPool] = None,
    ) -> None:
        self._size = size
        self._procs = procs
        self._loop = loop
        self._deliver = deliver
        self._jobs: "queue.SimpleQueue[Optional[Tuple[_Run, _Task, Any]]]" = queue.SimpleQueue()
        self._threads: List[threading.Thread] = []
        self._idle = 0
        self._lock = threading.Lock()
        self._results: Deque[Tuple[_Run, str, Any]] = deque()
        self._wake = False

    def submit(self, run: _Run, task: _Task, args: Any) -> None:
        with self._lock:
            start = self._idle == 0 and len(self._threads) < self._size
            if not start:
                self._idle -= 1
        if start:
            t = threading.Thread(target=self._work, name=f"argon-task-{len(self._threads)}", daemon=True)
            self._threads.append(t)
            t.start()
        self._jobs.put((run, task, args))

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            run, task, args = job
            token = _current.set(run.info)
            try:
                if run.job is not None and task.ref is not None and self._procs is not None:
                    out: Tuple[_Run, str, Any] = (run, *self._procs.call(run.job, task.ref, task.name, args))
                else:
                    out = (run, "done", task.fn(args))
            except (Exception, SystemExit) as e:
                out = (run, "failed", error_text(task.name, e))
            finally:
                _current.reset(token)
            del job, args
            self._results.append(out)
            del out
            with self._lock:
                self._idle += 1
            if not self._wake:
                self._wake = True
                try:
                    self._loop.call_soon_threadsafe(self._flush)
                except RuntimeError:
                    return

    def _flush(self) -> None:
        self._wake = False
        results = self._results
        while results:
            run, kind, value = results.popleft()
            self._deliver(run, kind, value)

    def shutdown(self) -> None:
        for _ in self._threads:
            self._jobs.put(None)


def format_duration(ms: int) -> str:
    """``ms`` milliseconds the way the Rust worker writes them: ``1s 500ms``."""
    if ms == 0:
        return "0s"
    parts = []
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)):
        n, ms = divmod(ms, size)
        if n:
            parts.append(f"{n}{unit}")
    return " ".join(parts)


def _check_task_name(name: str) -> str:
    if not isinstance(name, str) or not _TASK_NAME.match(name):
        raise ValueError(f"invalid task name {name!r}: use 1-128 letters, digits, '_', '-', '.' or ':'")
    return name


class Worker:
    """Serves Python functions as Argon tasks; see the module doc.

    ``mgr`` (default ``$ARGON_MGR``, else 127.0.0.1:8000) and ``key_file``
    (default ``$ARGON_KEY``) are read when serving starts; ``capacity`` is
    how many runs may go at once (default: the number of CPUs).
    """

    def __init__(
        self,
        mgr: Optional[str] = None,
        key_file: Optional[Union[str, "os.PathLike[str]"]] = None,
        capacity: Optional[int] = None,
        *,
        key: Optional[bytes] = None,
        heartbeat: float = 5.0,
        max_frame: int = _wire.DEFAULT_MAX_FRAME,
        stop_timeout: float = 30.0,
        reconnect_min: float = 0.2,
        reconnect_max: float = 10.0,
        connect_timeout: float = 5.0,
        agent: Optional[str] = None,
    ) -> None:
        self.mgr = mgr
        self.key_file = key_file
        self.key = key
        self.capacity = capacity if capacity is not None else (os.cpu_count() or 1)
        self.heartbeat = heartbeat
        self.max_frame = _wire.check_max_frame(max_frame)
        self.stop_timeout = stop_timeout
        self.reconnect_min = reconnect_min
        self.reconnect_max = reconnect_max
        self.connect_timeout = connect_timeout
        self.agent = (agent or AGENT)[:200]
        self._tasks: Dict[str, _Task] = {}
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._link: Optional[Link] = None
        self._link_closed: Optional["asyncio.Future[str]"] = None
        self._registered = False
        self._registrations = 0
        self._ready = threading.Condition()
        self._worker_id: Optional[int] = None
        self._slots: List[Optional[_Run]] = []
        self._runs: Dict[int, _Run] = {}
        self._idle: Optional[asyncio.Event] = None
        self._stop_requested = False
        self._stop_event: Optional[asyncio.Event] = None
        self._hurry: Optional[asyncio.Event] = None
        self._fatal: Optional[BaseException] = None
        self._pool: Optional[_Pool] = None
        self._procs: Optional[_procs.ProcessPool] = None
        self._held: List[Tuple[int, str, Any, str]] = []

    # --- declaring tasks -----------------------------------------------------

    def task(self, name: Optional[str] = None, *, thread: bool = True, process: bool = False) -> Callable[[F], F]:
        """Decorator registering a function as task ``name`` (default: the
        function's name). ``async def`` functions run on the event loop;
        plain ones on the worker's threads, or on the event loop with
        ``thread=False`` (for quick functions: a timeout or cancel cannot
        interrupt them there), or with ``process=True`` in a child process
        (for CPU-bound functions: a timeout or cancel kills the process).
        The function is returned unchanged."""

        def register(fn: F) -> F:
            self.add_task(name or fn.__name__, fn, thread=thread, process=process)
            return fn

        return register

    def add_task(self, name: str, fn: Callable[[Any], Any], *, thread: bool = True, process: bool = False) -> None:
        """Registers ``fn`` as task ``name``, like :meth:`task`. A process
        task must be a plain function defined at module level of a module
        other than ``__main__`` (ValueError otherwise): the child process
        imports it by name."""
        _check_task_name(name)
        if not callable(fn):
            raise TypeError(f"task {name}: {fn!r} is not callable")
        if self._loop is not None:
            raise RuntimeError("tasks must be added before the worker starts")
        is_async = inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(getattr(fn, "__call__", None))
        ref = None
        if process:
            if is_async:
                raise ValueError(f"task {name}: an async def function cannot run in a process")
            ref = _procs.function_ref(fn)
        self._tasks[name] = _Task(name, fn, is_async, thread, ref)

    @property
    def tasks(self) -> Tuple[str, ...]:
        """The registered task names."""
        return tuple(self._tasks)

    @property
    def worker_id(self) -> Optional[int]:
        """The id the manager gave this worker at its last registration."""
        return self._worker_id

    @property
    def registrations(self) -> int:
        """How many times the worker has registered (once per connection)."""
        return self._registrations

    def wait_ready(self, timeout: Optional[float] = None, *, registrations: int = 1) -> bool:
        """Waits until the worker is registered, for the ``registrations``-th
        time at least; False after ``timeout`` seconds."""
        with self._ready:
            return self._ready.wait_for(
                lambda: self._registered and self._registrations >= registrations, timeout
            )

    # --- running -------------------------------------------------------------

    def run(self, *, handle_signals: bool = True) -> None:
        """Serves until stopped, in a new event loop. With ``handle_signals``
        (on the main thread), SIGINT and SIGTERM stop it gracefully; a
        second one stops running tasks at once."""
        asyncio.run(self._main(handle_signals))

    async def _main(self, handle_signals: bool) -> None:
        loop = asyncio.get_running_loop()
        sigs: List[signal.Signals] = []
        if handle_signals and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, self._on_signal, sig)
                sigs.append(sig)
        try:
            await self.serve()
        finally:
            for sig in sigs:
                loop.remove_signal_handler(sig)

    def _on_signal(self, sig: signal.Signals) -> None:
        if self._stop_requested:
            log.warning("%s again: stopping running tasks now", sig.name)
        else:
            log.info("%s: draining (running tasks may take up to %g s)", sig.name, self.stop_timeout)
        self._request_stop()

    def stop(self) -> None:
        """Stops the worker gracefully; may be called from any thread. A
        second call stops running tasks at once."""
        loop = self._loop
        if loop is None:
            self._stop_requested = True
            return
        try:
            loop.call_soon_threadsafe(self._request_stop)
        except RuntimeError:
            self._stop_requested = True

    def _request_stop(self) -> None:
        if self._stop_requested:
            if self._hurry is not None:
                self._hurry.set()
            self._stop_all("the worker is shutting down")
        self._stop_requested = True
        if self._stop_event is not None:
            self._stop_event.set()

    async def serve(self) -> None:
        """Serves on the running event loop until :meth:`stop`. Raises
        AuthFailed for a wrong key and RegistrationRefused when the manager
        will never accept this worker; other failures are retried."""
        if not self._tasks:
            raise ValueError("the worker has no tasks: add some with @worker.task(...)")
        if not isinstance(self.capacity, int) or not 1 <= self.capacity <= _MAX_CAPACITY:
            raise ValueError(f"capacity must be an integer from 1 to {_MAX_CAPACITY}, got {self.capacity!r}")
        if self._loop is not None:
            raise RuntimeError("the worker is already serving")
        mgr = resolve_mgr(self.mgr)
        master = resolve_key(self.key_file, self.key)
        loop = self._loop = asyncio.get_running_loop()
        self._slots = [None] * self.capacity
        self._idle = asyncio.Event()
        self._idle.set()
        self._stop_event = asyncio.Event()
        self._hurry = asyncio.Event()
        if self._stop_requested:
            self._stop_event.set()
        procs = None
        if any(t.ref for t in self._tasks.values()):
            procs = _procs.ProcessPool(self.capacity, 4 * self.max_frame)
        self._procs = procs
        self._pool = _Pool(self.capacity, loop, self._finish, procs)
        tries = 0
        try:
            while not self._stop_requested:
                try:
                    link = await Link.open(
                        mgr,
                        master=master,
                        role="worker",
                        agent=self.agent,
                        max_frame=self.max_frame,
                        heartbeat=self.heartbeat,
                        connect_timeout=self.connect_timeout,
                        on_message=self._on_message,
                        on_closed=self._on_closed,
                    )
                except AuthFailed:
                    raise
                except ConnectError as e:
                    tries += 1
                    await self._backoff(tries, f"cannot reach the manager: {e}")
                    continue
                before = self._registrations
                why = await self._session(link)
                if self._fatal is not None:
                    raise self._fatal
                if self._registrations > before:
                    tries = 0
                if why is not None and not self._stop_requested:
                    tries += 1
                    await self._backoff(tries, why)
        finally:
            await self._wind_down()
            self._loop = None
            self._stop_requested = False

    async def _backoff(self, tries: int, why: str) -> None:
        delay = min(self.reconnect_max, self.reconnect_min * (1.0 + math.log(tries)))
        delay *= 1.0 + random.random() / 4.0
        if tries & (tries - 1) == 0:
            log.warning("%s; retrying in %.2f s (try %d)", why, delay, tries)
        assert self._stop_event is not None
        try:
            await asyncio.wait_for(self._stop_event.wait(), delay)
        except asyncio.TimeoutError:
            pass

    async def _session(self, link: Link) -> Optional[str]:
        """Registers over ``link`` and serves until it closes or the worker
        stops; returns why the link ended (None after a stop)."""
        assert self._loop is not None and self._stop_event is not None
        self._link = link
        self._held = []
        self._link_closed = self._loop.create_future()
        closed = self._link_closed
        running = []
        for r in self._runs.values():
            r.link = link
            running.append({"run_id": r.info.run_id, "slot": r.slot})
        link.send(
            {
                "register": {
                    "capacity": self.capacity,
                    "tasks": list(self._tasks),
                    "running": running,
                    "max_frame": self.max_frame,
                }
            }
        )
        stop: "asyncio.Future[Any]" = self._loop.create_task(self._stop_event.wait())
        waits: "set[asyncio.Future[Any]]" = {closed, stop}
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        if closed.done():
            return closed.result()
        await self._drain(link)
        return None

    async def _drain(self, link: Link) -> None:
        assert self._idle is not None and self._link_closed is not None
        if link.is_open and self._registered:
            link.send({"drain": {}})
        if self._runs:
            log.info("waiting for %d running task(s)", len(self._runs))
            if not await self._wait_idle(self.stop_timeout):
                self._stop_all("the worker is shutting down")
                await self._wait_idle(1.0)
        link.close("the worker stopped")
        await link.wait_closed(1.0)

    async def _wait_idle(self, timeout: float) -> bool:
        """Waits until no run is going, for at most ``timeout`` seconds or
        until a second stop request; whether it is idle."""
        assert self._idle is not None and self._hurry is not None
        waits = {asyncio.ensure_future(self._idle.wait()), asyncio.ensure_future(self._hurry.wait())}
        try:
            await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()
        return self._idle.is_set()

    async def _wind_down(self) -> None:
        if self._runs:
            self._stop_all("the worker is shutting down")
            if not await self._wait_idle(1.0):
                log.warning("%d task(s) in threads still running at exit", len(self._runs))
        link = self._link
        if link is not None:
            link.close("the worker stopped")
            await link.wait_closed(1.0)
        if self._pool is not None:
            self._pool.shutdown()
        if self._procs is not None:
            self._procs.shutdown()
            self._procs = None

    # --- messages from the manager -----------------------------------------

    def _on_message(self, name: str, fields: Dict[Any, Any]) -> None:
        link = self._link
        if link is None:
            return
        if name == "assign" and self._registered:
            self._assign(link, fields)
        elif name == "cancel" and self._registered:
            self._cancel(fields)
        elif name == "registered" and not self._registered:
            self._on_registered(link, fields)
        elif name == "error":
            self._on_error(link, _wire.get_str(fields, "message", ""), fields.get("permanent") is True)
        else:
            raise ProtocolError(f"a manager may not send {peer_text(name, 40)}")

    def _on_registered(self, link: Link, fields: Dict[Any, Any]) -> None:
        self._worker_id = _wire.get_int(fields, "worker_id")
        peer_max = _wire.get_int(fields, "max_frame", default=0)
        if peer_max:
            link.send_limit = min(self.max_frame, peer_max)
        with self._ready:
            self._registered = True
            self._registrations += 1
            self._ready.notify_all()
        held, self._held = self._held, []
        for run_id, kind, value, task in held:
            self._send_finished(link, run_id, kind, value, task)
        log.info(
            "registered with the manager at %s as worker %d: %d slot(s), tasks %s",
            link.addr,
            self._worker_id,
            self.capacity,
            ", ".join(self._tasks),
        )

    def _on_error(self, link: Link, message: str, permanent: bool) -> None:
        shown = peer_text(message)
        if permanent or (not self._registered and message.startswith("registration refused")):
            # Managers that predate `permanent` are judged by their text.
            if not permanent and _RETRYABLE_REFUSAL in message:
                link.close(f"the manager refused the registration for now: {shown}")
                return
            self._fatal = RegistrationRefused("the manager refused the registration", message)
            link.close(f"registration refused: {shown}")
            return
        link.close(f"the manager said: {shown}")

    def _on_closed(self, link: Link, reason: str) -> None:
        if link is not self._link:
            return
        self._link = None
        with self._ready:
            self._registered = False
        if self._link_closed is not None and not self._link_closed.done():
            self._link_closed.set_result(f"lost the manager ({reason})")

    def _assign(self, link: Link, fields: Dict[Any, Any]) -> None:
        run_id = fields.get("run_id")
        slot = fields.get("slot")
        name = fields.get("task")
        timeout_ms = fields.get("timeout_ms")
        if not (
            type(run_id) is int
            and 0 <= run_id <= _wire.U64_MAX
            and type(slot) is int
            and 0 <= slot <= _wire.U32_MAX
            and type(name) is str
            and (timeout_ms is None or (type(timeout_ms) is int and 0 <= timeout_ms <= _wire.U64_MAX))
        ):
            run_id = _wire.get_int(fields, "run_id")
            slot = _wire.get_int(fields, "slot", _wire.U32_MAX)
            name = _wire.get_str(fields, "task")
            timeout_ms = _wire.get_opt_int(fields, "timeout_ms")
        if "args" not in fields:
            raise ProtocolError("assign without args")
        args = fields["args"]
        if slot >= self.capacity:
            raise ProtocolError(f"assign of run {run_id} names slot {slot} of {self.capacity}")
        busy = self._slots[slot]
        if busy is not None:
            raise ProtocolError(f"run {run_id} was assigned to slot {slot}, which is running run {busy.info.run_id}")
        if self._stop_requested:
            self._send_finished(link, run_id, "failed", "the worker is shutting down", name)
            return
        assert self._loop is not None and self._idle is not None
        task = self._tasks.get(name)
        info = RunInfo(run_id, name, None if not timeout_ms else time.monotonic() + timeout_ms / 1000)
        run = _Run(info, slot, task, link)
        if task is None:
            self._send_finished(link, run_id, "failed", f"this worker does not provide task {peer_text(name, 128)}", name)
            return
        self._slots[slot] = run
        self._runs[run_id] = run
        self._idle.clear()
        if timeout_ms:
            why = f"task {name} timed out after {format_duration(timeout_ms)}"
            run.timer = self._loop.call_later(timeout_ms / 1000, self._stop_run, run, why)
        if task.is_async:
            run.atask = self._loop.create_task(self._run_async(run, task, args))
            # A task cancelled before its first step never runs the body of
            # _run_async, which reports the run: this callback does then.
            run.atask.add_done_callback(functools.partial(self._async_ended, run))
        elif task.ref is not None:
            assert self._pool is not None
            run.job = _procs.Job()
            self._pool.submit(run, task, args)
        elif task.thread:
            assert self._pool is not None
            self._pool.submit(run, task, args)
        else:
            token = _current.set(info)
            try:
                value = task.fn(args)
            except (Exception, SystemExit) as e:
                self._finish(run, "failed", error_text(name, e))
                return
            finally:
                _current.reset(token)
            self._finish(run, "done", value)

    def _cancel(self, fields: Dict[Any, Any]) -> None:
        run_id = _wire.get_int(fields, "run_id")
        slot = _wire.get_int(fields, "slot", _wire.U32_MAX)
        if slot < self.capacity:
            run = self._slots[slot]
            if run is not None and run.info.run_id == run_id:
                self._stop_run(run, f"run {run_id} was cancelled")

    # --- runs ------------------------------------------------------------------

    async def _run_async(self, run: _Run, task: _Task, args: Any) -> None:
        _current.set(run.info)
        try:
            value = await task.fn(args)
        except asyncio.CancelledError:
            if run.stop_reason is None:
                self._finish(run, "failed", "the worker is shutting down")
                raise
            self._finish(run, "failed", run.stop_reason)
            return
        except (Exception, SystemExit) as e:
            self._finish(run, "failed", error_text(task.name, e))
            return
        self._finish(run, "done", value)

    def _async_ended(self, run: _Run, _: "asyncio.Task[None]") -> None:
        self._finish(run, "failed", "the worker is shutting down")

    def _stop_run(self, run: _Run, reason: str) -> None:
        if run.done or run.stop_reason is not None:
            return
        run.stop_reason = reason
        run.info._stop()
        if run.atask is not None:
            run.atask.cancel()
        elif run.job is not None:
            if self._procs is not None:
                self._procs.kill(run.job)
        elif not run.warned:
            run.warned = True
            log.warning(
                "%s, but task %s runs in a thread that cannot be interrupted: its slot stays busy "
                "until the function returns (it can check argon_tasks.current_run().cancelled)",
                reason,
                peer_text(run.info.task, 128),
            )

    def _stop_all(self, reason: str) -> None:
        for run in list(self._runs.values()):
            self._stop_run(run, reason)

    def _finish(self, run: _Run, kind: str, value: Any) -> None:
        if run.done:
            return
        run.done = True
        if run.timer is not None:
            run.timer.cancel()
        self._slots[run.slot] = None
        self._runs.pop(run.info.run_id, None)
        if not self._runs and self._idle is not None:
            self._idle.set()
        if run.stop_reason is not None:
            kind, value = "failed", run.stop_reason
        link = run.link
        if link is None or link is not self._link or not link.is_open:
            log.debug("run %d ended while disconnected: its result is dropped", run.info.run_id)
            return
        if not self._registered:
            # A run carried over in `register`: its `finished` must follow `registered`.
            self._held.append((run.info.run_id, kind, value, run.info.task))
            return
        self._send_finished(link, run.info.run_id, kind, value, run.info.task)

    def _send_finished(self, link: Link, run_id: int, kind: str, value: Any, task: str) -> None:
        limit = link.send_limit
        if kind == "done":
            if _wire.value_depth(value) > _wire.MAX_VALUE_DEPTH:
                kind, value = "failed", f"result nested deeper than {_wire.MAX_VALUE_DEPTH} levels"
            else:
                try:
                    plain = b"".join((_FINISHED_HEAD, _wire.pack(run_id), _DONE_VALUE, _wire.pack(value)))
                except (TypeError, ValueError, OverflowError) as e:
                    kind, value = "failed", clip(f"task {task} returned a result that cannot be sent: {e}", _MAX_ERROR_BYTES)
                else:
                    try:
                        link.send_packed(plain)
                        return
                    except FrameTooLarge as e:
                        kind, value = "failed", f"result of {e.size} bytes exceeds the frame limit of {e.limit} bytes"
                    except ConnectionLost:
                        log.debug("run %d ended as the connection closed: its result is dropped", run_id)
                        return
        text = clip(str(value), min(_MAX_ERROR_BYTES, limit - 200))
        try:
            link.send({"finished": {"run_id": run_id, "outcome": {"failed": {"error": text}}}})
        except (FrameTooLarge, ConnectionLost) as e:
            log.warning("cannot report run %d: %s", run_id, e)
