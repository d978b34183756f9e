"""The asyncio client: :class:`AsyncClient` and its :class:`TaskHandle`."""

from __future__ import annotations

import asyncio
import collections.abc
import os
from collections import deque
from typing import (
    Any,
    AsyncIterable,
    AsyncIterator,
    Deque,
    Generator,
    Iterable,
    Optional,
    Union,
)

from . import _wire
from ._core import Call, Core, Settings, check_task_id, encode_submit
from .errors import ArgonError, ClientClosed, NotReady
from .status import Status

__all__ = ["AsyncClient", "TaskHandle"]


class TaskHandle:
    """A task submitted by :meth:`AsyncClient.submit`.

    ``await handle`` (or ``await handle.result()``) gives the task's value or
    raises its error; :meth:`cancel` asks the manager to stop it. Cancelling
    the coroutine that awaits the handle cancels the task too.
    """

    __slots__ = ("task", "_core", "_call", "_fut")

    def __init__(self, task: str, core: Core, call: Call, fut: "asyncio.Future[Any]") -> None:
        self.task = task
        self._core = core
        self._call = call
        self._fut = fut

    def done(self) -> bool:
        """Whether the task's outcome is known."""
        return self._fut.done()

    @property
    def task_id(self) -> Optional[int]:
        """The task's manager-wide id once the manager told it (with retry
        on, a manager with a task store does), else None."""
        return self._call.task_id

    @property
    def id(self) -> Optional[int]:
        """The same as :attr:`task_id`. An attached task's id is told only
        by a manager with a task store; :meth:`AsyncClient.enqueue` always
        gets one."""
        return self._call.task_id

    def cancel(self) -> None:
        """Asks the manager to cancel the task. Its outcome then is
        usually :class:`TaskFailed` with ``error == "cancelled by the client"``,
        unless the result was already on its way. Awaiting the handle
        after a cancel is optional: an outcome nobody awaits is no
        "exception was never retrieved" warning."""
        if not self._fut.done():
            self._fut.add_done_callback(_consume)
        self._core.cancel(self._call)

    async def result(self) -> Any:
        """The task's value; raises TaskFailed, Denied, Overloaded,
        ConnectionLost, ... as the outcome says."""
        try:
            return await asyncio.shield(self._fut)
        except asyncio.CancelledError:
            if not self._fut.done():
                # The outcome that follows (usually "cancelled by the
                # client") is for nobody unless the handle is awaited again:
                # retrieve it, so asyncio does not warn that it never was.
                self._fut.add_done_callback(_consume)
                self._core.cancel(self._call)
            raise

    def __await__(self) -> Generator[Any, None, Any]:
        return self.result().__await__()


def _settle(fut: "asyncio.Future[Any]", call: Call) -> None:
    if fut.done():
        return
    if call.error is not None:
        fut.set_exception(call.error)
        if isinstance(call.error, ClientClosed):
            # Closing the client ends what it had pending on purpose: a
            # handle nobody awaits any more is no "never retrieved" error.
            fut.exception()
    else:
        fut.set_result(call.value)


class AsyncClient:
    """An asyncio client of an Argon manager over one connection.

    ``mgr`` is ``HOST:PORT`` (default ``$ARGON_MGR``, else 127.0.0.1:8000);
    ``key_file`` the cluster's key file (default ``$ARGON_KEY``), or ``key``
    its contents. The connection opens on first use and again on the first
    call after it was lost; calls pending when it is lost raise
    :class:`ConnectionLost`.

    A denied task is resent after ``base × (1 + ln n)`` plus 0–25 % jitter
    (``base`` = the larger of ``min_backoff`` and the manager's hint, every
    delay at most ``max_backoff``) for up to ``retry_for`` seconds, then
    raises :class:`Overloaded`; with ``retry=False`` a deny raises
    :class:`Denied` at once. At most ``max_in_flight`` calls are pending at
    once: more wait for room. Use it from one event loop only.

    With retry on, a task asks for its id, which a manager with a task
    store (``--persist``) tells. If the connection is lost before the
    task's result, the client reconnects on a backoff and waits on that id
    again, for up to ``retry_for`` seconds from the loss, so a restarted
    manager's result still reaches the caller; a task whose id was not told
    raises :class:`ConnectionLost` as above.
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
        self._core_: Optional[Core] = None
        self._room = max_in_flight
        self._room_waiters: Deque["asyncio.Future[None]"] = deque()

    @property
    def mgr(self) -> str:
        """The manager's address."""
        return self._settings.mgr

    def _core(self) -> Core:
        loop = asyncio.get_running_loop()
        core = self._core_
        if core is None:
            core = self._core_ = Core(self._settings, loop)
        elif core.loop is not loop:
            raise RuntimeError("an AsyncClient is bound to the event loop it was first used on")
        if core.closed:
            raise ClientClosed("the client is closed")
        return core

    async def connect(self) -> None:
        """Opens the connection now (it opens by itself on first use).
        Raises ConnectError, AtConnectionLimit or AuthFailed."""
        await self._core().connect()

    async def _take_room(self) -> None:
        while self._room <= 0:
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._room_waiters.append(fut)
            try:
                await fut
            except asyncio.CancelledError:
                if fut.done() and not fut.cancelled():
                    self._wake_one()
                raise
        self._room -= 1

    def _give_room(self) -> None:
        self._room += 1
        self._wake_one()

    def _wake_one(self) -> None:
        while self._room_waiters:
            w = self._room_waiters.popleft()
            if not w.done():
                w.set_result(None)
                return

    def _new_call(self, core: Core, kind: str, task: str, body: bytes, retry: bool) -> "tuple[Call, asyncio.Future[Any]]":
        fut: asyncio.Future[Any] = core.loop.create_future()

        def on_done(call: Call) -> None:
            self._give_room()
            _settle(fut, call)

        return Call(kind, task, body, retry, on_done), fut

    async def submit(
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
    ) -> TaskHandle:
        """Sends the task and returns its handle without waiting for the
        result. ``timeout`` (seconds) limits its run time on the worker;
        ``attempts`` is how often it may be started when workers are lost
        (None: the manager's default); ``retry`` overrides the client's
        setting for this task; ``retries`` is how often the manager may run
        it again after a failed run, on a doubling backoff, at most 10
        (None: the manager's default, 0 unless configured); ``delay``
        (seconds) has the manager run it that long after it receives the
        submit instead of at once (the handle resolves once it ran). Raises ValueError, TypeError or FrameTooLarge
        at once for arguments that cannot be sent."""
        return await self._submit(task, args, priority, timeout, attempts, retry, retries, delay=delay)

    async def _submit(
        self,
        task: str,
        args: Any,
        priority: str,
        timeout: Optional[float],
        attempts: Optional[int],
        retry: Optional[bool],
        retries: Optional[int],
        detach: bool = False,
        delay: Optional[float] = None,
    ) -> TaskHandle:
        core = self._core()
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
        await self._take_room()
        call, fut = self._new_call(core, "enqueue" if detach else "submit", task, body, retry_)
        core.start(call)
        link = core._link
        if link is not None and link.write_paused:
            await link.drain()
        return TaskHandle(task, core, call, fut)

    async def enqueue(
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
        manager accepted it; the task outlives this client. See
        :meth:`Client.enqueue`."""
        h = await self._submit(task, args, priority, timeout, attempts, retry, retries, detach=True)
        try:
            return int(await asyncio.shield(h._fut))
        except asyncio.CancelledError:
            h._fut.add_done_callback(_consume)
            raise

    async def result(self, task_id: int, *, wait: bool = True, timeout: Optional[float] = None) -> Any:
        """The value of task ``task_id``; raises TaskFailed, NotReady or
        UnknownTask. See :meth:`Client.result`. Cancelling the coroutine
        stops the wait, not the task."""
        check_task_id(task_id)
        core = self._core()
        await self._take_room()
        call, fut = self._new_call(core, "lookup", "", b"", self._settings.retry)
        call.task_id = task_id
        call.wait = wait
        core.start(call)
        try:
            return await asyncio.wait_for(asyncio.shield(fut), timeout)
        except NotReady:
            raise
        except asyncio.TimeoutError:
            if fut.done():
                raise
            raise NotReady(task_id, None, timeout) from None
        finally:
            if not call.done:
                fut.cancel()
                core.drop(call)

    async def cancel(self, task_id: int) -> str:
        """Cancels task ``task_id``, whoever submitted it; returns
        ``"cancelled"``, ``"finished"`` or ``"unknown"``. See
        :meth:`Client.cancel`."""
        check_task_id(task_id)
        core = self._core()
        await self._take_room()
        call, fut = self._new_call(core, "cancel_task", "", b"", False)
        call.task_id = task_id
        core.start(call)
        return str(await fut)

    async def run(
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
        has no room, ConnectionLost when the connection ends first.
        Cancelling the awaiting coroutine cancels the task."""
        handle = await self.submit(
            task, args, priority=priority, timeout=timeout, attempts=attempts, retry=retry, retries=retries
        )
        return await handle

    async def map(
        self,
        task: str,
        iterable: Union[Iterable[Any], AsyncIterable[Any]],
        *,
        concurrency: int = 64,
        return_exceptions: bool = False,
        priority: str = "normal",
        timeout: Optional[float] = None,
        attempts: Optional[int] = None,
        retry: Optional[bool] = None,
        retries: Optional[int] = None,
    ) -> AsyncIterator[Any]:
        """Runs ``task`` once per item of ``iterable`` (the item is the
        task's arguments), at most ``concurrency`` at a time, and yields the
        results in input order. Items are read only as room frees, so memory
        stays bounded. The first failure is raised (the tasks still pending
        are cancelled) unless ``return_exceptions`` is set, which yields the
        ArgonError in its place instead."""
        if not isinstance(concurrency, int) or concurrency < 1:
            raise ValueError("concurrency must be a positive integer")
        window: Deque[TaskHandle] = deque()
        items = _aiter(iterable)
        exhausted = False
        current: Optional[TaskHandle] = None
        try:
            while True:
                while not exhausted and len(window) < concurrency:
                    try:
                        item = await items.__anext__()
                    except StopAsyncIteration:
                        exhausted = True
                        break
                    window.append(
                        await self.submit(
                            task,
                            item,
                            priority=priority,
                            timeout=timeout,
                            attempts=attempts,
                            retry=retry,
                            retries=retries,
                        )
                    )
                if not window:
                    return
                current = window.popleft()
                try:
                    value = await current._fut
                except ArgonError as e:
                    if not return_exceptions:
                        raise
                    current = None
                    yield e
                    continue
                current = None
                yield value
        finally:
            if current is not None:
                window.appendleft(current)
            for h in window:
                if not h._call.done:
                    h._fut.add_done_callback(_consume)
                    h.cancel()

    async def ping(self, timeout: float = 10.0) -> float:
        """Round-trip time to the manager in seconds; asyncio.TimeoutError
        after ``timeout`` seconds without an answer."""
        return float(await self._request("ping", timeout))

    async def status(self, timeout: float = 10.0) -> Status:
        """The cluster's status (see :class:`Status`)."""
        st = await self._request("status_request", timeout)
        assert isinstance(st, Status)
        return st

    async def _request(self, kind: str, timeout: float) -> Any:
        core = self._core()
        await self._take_room()
        call, fut = self._new_call(core, kind, "", b"", False)
        core.start(call)
        try:
            return await asyncio.wait_for(asyncio.shield(fut), timeout)
        finally:
            if not call.done:
                fut.cancel()
                core.drop(call)

    async def close(self) -> None:
        """Closes the connection; pending calls raise ClientClosed."""
        core = self._core_
        if core is not None and not core.closed:
            await core.close()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _consume(fut: "asyncio.Future[Any]") -> None:
    if not fut.cancelled():
        fut.exception()


class _SyncToAsync:
    """An async iterator over a plain iterable."""

    def __init__(self, it: Iterable[Any]) -> None:
        self._it = iter(it)

    def __aiter__(self) -> "_SyncToAsync":
        return self

    async def __anext__(self) -> Any:
        try:
            return next(self._it)
        except StopIteration:
            raise StopAsyncIteration from None


def _aiter(iterable: Union[Iterable[Any], AsyncIterable[Any]]) -> AsyncIterator[Any]:
    if isinstance(iterable, collections.abc.AsyncIterable):
        return iterable.__aiter__()
    return _SyncToAsync(iterable)
