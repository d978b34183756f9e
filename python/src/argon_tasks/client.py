"""The blocking client: :class:`Client` and its :class:`TaskFuture`.

A Client runs the asyncio engine of :mod:`argon_tasks.aio` on a private
event-loop thread, so it can be used from any number of ordinary threads at
once, all sharing one connection.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import threading
import weakref
from collections import deque
from typing import Any, Callable, Deque, Iterable, Iterator, List, Optional, Tuple, Union

from . import _wire
from ._core import Call, Core, Settings, check_task_id, encode_submit
from .errors import ArgonError, ClientClosed, NotReady
from .status import Status

__all__ = ["Client", "TaskFuture"]

log = logging.getLogger("argon_tasks")

_CLOSE_WAIT = 5.0


class _Room:
    """Counts the calls a Client may still start; takers block while none
    is left."""

    def __init__(self, size: int) -> None:
        self._free = size
        self._cond = threading.Condition(threading.Lock())

    def take_up_to(self, n: int) -> int:
        """Takes between 1 and ``n`` places, waiting for the first."""
        with self._cond:
            while self._free <= 0:
                self._cond.wait()
            got = min(n, self._free)
            self._free -= got
            return got

    def give(self, n: int = 1) -> None:
        """Returns ``n`` places."""
        if n:
            with self._cond:
                self._free += n
                self._cond.notify(n)


class TaskFuture:
    """A task submitted by :meth:`Client.submit`.

    :meth:`result` waits for its value or raises its error; :meth:`cancel`
    asks the manager to stop it. ``future`` is a plain
    :class:`concurrent.futures.Future` for ``concurrent.futures.wait`` and
    ``as_completed``.
    """

    __slots__ = ("task", "_client", "_call", "future")

    def __init__(self, task: str, client: "Client", call: Call, future: "concurrent.futures.Future[Any]") -> None:
        self.task = task
        self._client = client
        self._call = call
        self.future = future

    def done(self) -> bool:
        """Whether the task's outcome is known."""
        return self.future.done()

    @property
    def task_id(self) -> Optional[int]:
        """The task's manager-wide id once the manager told it (with retry
        on, a manager with a task store does), else None."""
        return self._call.task_id

    @property
    def id(self) -> Optional[int]:
        """The same as :attr:`task_id`. An attached task's id is told only
        by a manager with a task store; :meth:`Client.enqueue` always gets
        one."""
        return self._call.task_id

    def result(self, timeout: Optional[float] = None) -> Any:
        """The task's value, waiting at most ``timeout`` seconds
        (TimeoutError after that; the task goes on). Raises TaskFailed,
        Denied, Overloaded, ConnectionLost, ... as the outcome says. An
        interrupt (Ctrl-C) while waiting cancels the task."""
        try:
            return self.future.result(timeout)
        except KeyboardInterrupt:
            self.cancel()
            raise

    def exception(self, timeout: Optional[float] = None) -> Optional[BaseException]:
        """The task's error, or None if it succeeded; waits like :meth:`result`."""
        return self.future.exception(timeout)

    def cancel(self) -> None:
        """Asks the manager to cancel the task; its outcome then is usually
        TaskFailed ``cancelled by the client``."""
        self._client._post_cancel(self._client._core.cancel, self._call)

    def add_done_callback(self, fn: Callable[["TaskFuture"], None]) -> None:
        """Calls ``fn(self)`` once the outcome is known, on the client's
        thread (or at once if it is known already)."""
        self.future.add_done_callback(lambda _: fn(self))


def _settle(cf: "concurrent.futures.Future[Any]", call: Call) -> None:
    if call.error is not None:
        cf.set_exception(call.error)
    else:
        cf.set_result(call.value)


def _shut(core: Core, loop: asyncio.AbstractEventLoop, thread: threading.Thread) -> None:
    """Closes the connection, stops the loop's thread and closes the loop;
    run by :meth:`Client.close` or when a Client is garbage-collected."""
    if loop.is_closed() or not thread.is_alive():
        return
    try:
        asyncio.run_coroutine_threadsafe(core.close(), loop).result(_CLOSE_WAIT)
    except concurrent.futures.TimeoutError:
        log.warning("the client's connection did not close within %g s", _CLOSE_WAIT)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(_CLOSE_WAIT)
    if not thread.is_alive():
        loop.close()


class Client:
    """A blocking client of an Argon manager over one connection.

    Takes the same arguments as :class:`argon_tasks.AsyncClient` (manager
    address, key file, retry and limits) and offers the same calls without
    ``await``. It is safe to share between threads. Close it (or use it as
    a context manager) to end its connection and its thread.
    """

    def __init__(
        self,
        mgr: Optional[str] = None,
        key_file: Optional[Union[str, "os.PathLike[str]"]] = None,
        *,
        key: Optional[bytes] = None,
        retry: bool = True,
        retry_for: Optional[float] = 60.0,
        min_backoff: float = 0.01,
        max_backoff: float = 5.0,
        max_in_flight: int = 10_000,
        max_frame: int = _wire.DEFAULT_MAX_FRAME,
        heartbeat: float = 5.0,
        connect_timeout: float = 5.0,
        agent: Optional[str] = None,
    ) -> None:
        self._settings = Settings(
            mgr=mgr,
            key_file=key_file,
            key=key,
            retry=retry,
            retry_for=retry_for,
            min_backoff=min_backoff,
            max_backoff=max_backoff,
            max_in_flight=max_in_flight,
            max_frame=max_frame,
            heartbeat=heartbeat,
            connect_timeout=connect_timeout,
            agent=agent,
        )
        self._room = _Room(max_in_flight)
        self._loop = asyncio.new_event_loop()
        self._core = Core(self._settings, self._loop)
        self._thread = threading.Thread(target=self._loop.run_forever, name="argon-client", daemon=True)
        self._thread.start()
        self._closed = False
        self._finalizer = weakref.finalize(self, _shut, self._core, self._loop, self._thread)

    @property
    def mgr(self) -> str:
        """The manager's address."""
        return self._settings.mgr

    def _post(self, fn: Callable[..., Any], *args: Any) -> None:
        """Runs ``fn(*args)`` on the client's thread; ClientClosed if the
        client is closed."""
        if not self._closed:
            try:
                self._loop.call_soon_threadsafe(fn, *args)
                return
            except RuntimeError:
                pass
        raise ClientClosed("the client is closed")

    def _post_cancel(self, fn: Callable[..., Any], *args: Any) -> None:
        """Like :meth:`_post` for a cancel, which a closed client has done
        already."""
        try:
            self._post(fn, *args)
        except ClientClosed:
            return

    def _wait(self, coro: Any, timeout: Optional[float]) -> Any:
        if self._closed:
            coro.close()
            raise ClientClosed("the client is closed")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def connect(self) -> None:
        """Opens the connection now (it opens by itself on first use).
        Raises ConnectError, AtConnectionLimit or AuthFailed."""
        self._wait(self._core.connect(), None)

    def _new_call(self, kind: str, task: str, body: bytes, retry: bool) -> Tuple[Call, "concurrent.futures.Future[Any]"]:
        if self._closed:
            raise ClientClosed("the client is closed")
        self._room.take_up_to(1)
        cf: concurrent.futures.Future[Any] = concurrent.futures.Future()
        room = self._room

        def on_done(call: Call) -> None:
            room.give()
            _settle(cf, call)

        return Call(kind, task, body, retry, on_done), cf

    def _prepare(
        self,
        task: str,
        args: Any,
        priority: str,
        timeout: Optional[float],
        attempts: Optional[int],
        retry: Optional[bool],
        retries: Optional[int] = None,
        detach: bool = False,
        delay: Optional[float] = None,
    ) -> TaskFuture:
        retry_ = self._settings.retry if retry is None else retry
        body = encode_submit(
            task,
            args,
            priority,
            timeout,
            attempts,
            self._settings.max_frame,
            retries,
            retry_,
            detach=detach,
            delay=delay,
        )
        call, cf = self._new_call("enqueue" if detach else "submit", task, body, retry_)
        return TaskFuture(task, self, call, cf)

    def submit(
        self,
        task: str,
        args: Any = None,
        *,
        priority: str = "normal",
        timeout: Optional[float] = None,
        attempts: Optional[int] = None,
        retry: Optional[bool] = None,
        retries: Optional[int] = None,
        delay: Optional[float] = None,
    ) -> TaskFuture:
        """Sends the task and returns its :class:`TaskFuture` at once (it
        blocks only while ``max_in_flight`` calls are pending). Options as
        in :meth:`AsyncClient.submit`."""
        h = self._prepare(task, args, priority, timeout, attempts, retry, retries, delay=delay)
        self._post(self._core.start, h._call)
        return h

    def enqueue(
        self,
        task: str,
        args: Any = None,
        *,
        priority: str = "normal",
        timeout: Optional[float] = None,
        attempts: Optional[int] = None,
        retry: Optional[bool] = None,
        retries: Optional[int] = None,
    ) -> int:
        """Sends the task detached and returns its manager-wide id once the
        manager accepted it. The task runs on after this client closes; its
        outcome is read by id with :meth:`result` (from any client, for as
        long as the manager keeps it: an hour by default). Options as in
        :meth:`submit`. Raises TaskFailed when the manager refused it (no
        worker provides it, ...), Denied or Overloaded when it had no room,
        ConnectionLost when the connection ended first (the task may or may
        not have been accepted)."""
        h = self._prepare(task, args, priority, timeout, attempts, retry, retries, detach=True)
        self._post(self._core.start, h._call)
        return int(h.result())

    def result(self, task_id: int, *, wait: bool = True, timeout: Optional[float] = None) -> Any:
        """The value of task ``task_id`` (from :meth:`enqueue`, here or in
        another process). With ``wait`` it returns once the task finished,
        waiting at most ``timeout`` seconds (None: no limit); without, at
        once. Raises TaskFailed when the task failed (``error`` says why,
        ``cancelled by the client`` after a cancel), NotReady when it has
        not finished (without ``wait``, or past ``timeout``: the task goes
        on), UnknownTask when the manager does not know the id (or no
        longer keeps its outcome). With retry on, a connection lost while
        waiting is reconnected and asked again, within ``retry_for``."""
        check_task_id(task_id)
        call, cf = self._new_call("lookup", "", b"", self._settings.retry)
        call.task_id = task_id
        call.wait = wait
        self._post(self._core.start, call)
        try:
            return cf.result(timeout)
        except NotReady:
            raise
        except concurrent.futures.TimeoutError:
            if cf.done():
                raise
            self._post_cancel(self._core.drop, call)
            raise NotReady(task_id, None, timeout) from None
        except KeyboardInterrupt:
            self._post_cancel(self._core.drop, call)
            raise

    def cancel(self, task_id: int) -> str:
        """Cancels task ``task_id``, whoever submitted it, and returns what
        the manager did: ``"cancelled"`` (it was queued or running; its
        outcome is now TaskFailed ``cancelled by the client``),
        ``"finished"`` (it had finished; its outcome stays) or
        ``"unknown"`` (no such task is queued, running or kept)."""
        check_task_id(task_id)
        call, cf = self._new_call("cancel_task", "", b"", False)
        call.task_id = task_id
        self._post(self._core.start, call)
        return str(cf.result())

    def run(
        self,
        task: str,
        args: Any = None,
        *,
        priority: str = "normal",
        timeout: Optional[float] = None,
        attempts: Optional[int] = None,
        retry: Optional[bool] = None,
        retries: Optional[int] = None,
    ) -> Any:
        """Runs the task and returns its value. Raises TaskFailed when it
        fails, Denied (only with retry off) or Overloaded when the manager
        has no room, ConnectionLost when the connection ends first."""
        return self.submit(
            task, args, priority=priority, timeout=timeout, attempts=attempts, retry=retry, retries=retries
        ).result()

    def map(
        self,
        task: str,
        iterable: Iterable[Any],
        *,
        concurrency: int = 64,
        return_exceptions: bool = False,
        priority: str = "normal",
        timeout: Optional[float] = None,
        attempts: Optional[int] = None,
        retry: Optional[bool] = None,
        retries: Optional[int] = None,
    ) -> Iterator[Any]:
        """Runs ``task`` once per item (the item is the task's arguments),
        at most ``concurrency`` at a time, and yields the results in input
        order. Items are read from ``iterable`` only as room frees. The
        first failure is raised (pending tasks are cancelled) unless
        ``return_exceptions`` is set, which yields the ArgonError instead."""
        if not isinstance(concurrency, int) or concurrency < 1:
            raise ValueError("concurrency must be a positive integer")
        if self._closed:
            raise ClientClosed("the client is closed")
        retry_ = self._settings.retry if retry is None else retry
        max_frame = self._settings.max_frame
        room = self._room
        step = max(1, concurrency // 8)
        items = iter(iterable)
        exhausted = False
        window: Deque[Call] = deque()
        ready = threading.Event()
        awaited: List[Optional[Call]] = [None]

        def on_done(call: Call) -> None:
            room.give()
            if call is awaited[0]:
                ready.set()

        try:
            while True:
                free = concurrency - len(window)
                if not exhausted and free >= (step if window and window[0].done else 1):
                    granted = room.take_up_to(free)
                    batch: List[Call] = []
                    try:
                        while len(batch) < granted:
                            try:
                                item = next(items)
                            except StopIteration:
                                exhausted = True
                                break
                            body = encode_submit(task, item, priority, timeout, attempts, max_frame, retries, retry_)
                            batch.append(Call("submit", task, body, retry_, on_done))
                    finally:
                        room.give(granted - len(batch))
                        if batch:
                            window.extend(batch)
                            self._post(self._core.start_many, batch)
                if not window:
                    return
                head = window[0]
                if not head.done:
                    ready.clear()
                    awaited[0] = head
                    if not head.done:
                        ready.wait()
                    awaited[0] = None
                window.popleft()
                if head.error is None:
                    yield head.value
                elif return_exceptions and isinstance(head.error, ArgonError):
                    yield head.error
                else:
                    raise head.error
        finally:
            if window:
                self._post_cancel(self._core.cancel_many, list(window))

    def ping(self, timeout: float = 10.0) -> float:
        """Round-trip time to the manager in seconds; TimeoutError after
        ``timeout`` seconds without an answer."""
        return float(self._request("ping", timeout))

    def status(self, timeout: float = 10.0) -> Status:
        """The cluster's status (see :class:`Status`)."""
        st = self._request("status_request", timeout)
        assert isinstance(st, Status)
        return st

    def _request(self, kind: str, timeout: float) -> Any:
        call, cf = self._new_call(kind, "", b"", False)
        self._post(self._core.start, call)
        try:
            return cf.result(timeout)
        finally:
            if not cf.done():
                self._post_cancel(self._core.drop, call)

    def close(self) -> None:
        """Closes the connection and stops the client's thread; pending
        calls raise ClientClosed."""
        if threading.current_thread() is self._thread:
            raise RuntimeError("a Client cannot be closed from its own thread (a done callback)")
        self._closed = True
        self._finalizer()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
