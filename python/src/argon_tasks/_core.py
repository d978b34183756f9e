"""The client engine shared by :class:`AsyncClient` and :class:`Client`.

A :class:`Core` lives on one event loop and is only touched from that
loop's thread. It owns the connection (opened on first use, reopened on the
first call after a loss), matches answers to requests by id, resends denied
submits on a logarithmic backoff, and fails what was pending when the
connection ends. Requests are :class:`Call` objects whose ``on_done``
callback hands the outcome to the front end that made them.

Waiting again: a submit with retry on asks for its task's id
(``want_id``), which a manager with a task store tells in an ``accepted``.
When the connection ends before the ``reply``, such a submit becomes a
wait on that id (``result_request`` with ``wait``): the Core reconnects on
the backoff and asks again, for at most ``retry_for`` seconds from the
loss, so the caller still gets the task's one outcome from a restarted
manager. A submit whose id was not told fails with ConnectionLost.

Tasks by id: an ``enqueue`` is a detached submit, done when the manager's
``accepted`` tells the id; a ``lookup`` is the caller's ``result_request``
(asked again on a new connection when its own is lost, as above, and again
after a second when a manager at its bound of waits answers a wait at
once); a ``cancel_task`` ends with its ``cancel_result``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import random
import time
from typing import Any, Callable, Deque, Dict, Mapping, Optional, Union

from collections import deque

from . import _wire
from ._link import Link, split_addr
from ._text import peer_text
from .errors import (
    ArgonError,
    ClientClosed,
    ConnectError,
    ConnectionLost,
    Denied,
    FrameTooLarge,
    NotReady,
    Overloaded,
    ProtocolError,
    TaskFailed,
    UnknownTask,
)
from .status import Status

log = logging.getLogger("argon_tasks")

AGENT = "argon-tasks-py/0.1.0"
DEFAULT_MGR = "127.0.0.1:8000"
PRIORITIES = ("high", "normal", "low")
CANCELLED = "cancelled by the client"
CANCEL_RESULTS = ("cancelled", "finished", "unknown")
"""What ``cancel_task`` may answer (docs/PROTOCOL.md §7.2)."""
_WAITS_AGAIN = ("result_request", "lookup")

_SUBMIT_HEAD = b"\x81\xa6submit"
_ID_KEY = b"\xa2id"
_REATTACH_BASE = 0.2
"""Base of the backoff between tries to reach the manager again while
waiting on a task, in seconds (0.2, 0.34, 0.42, ...)."""
_CLOSE_WAIT = 1.0
"""How long closing waits for the manager to close its end of the
connection after the client's end of stream (see Link.close)."""
_WAIT_AGAIN = 1.0
"""Pause before asking again when the manager answered a wait at once
with ``queued`` or ``running`` (it holds a bounded number of waits)."""


def resolve_mgr(mgr: Optional[str]) -> str:
    """``mgr``, else ``$ARGON_MGR``, else 127.0.0.1:8000; checked."""
    addr = mgr or os.environ.get("ARGON_MGR") or DEFAULT_MGR
    split_addr(addr)
    return addr


def resolve_key(key_file: Optional[Union[str, "os.PathLike[str]"]], key: Optional[bytes]) -> bytes:
    """The master key from ``key`` (the key file's contents), ``key_file``
    or ``$ARGON_KEY``; warnings about the file are logged."""
    if key is not None:
        return _wire.master_key(key)
    path = key_file if key_file is not None else os.environ.get("ARGON_KEY")
    if not path:
        raise ValueError("no key: pass key_file (or key), or set ARGON_KEY")
    master, warnings = _wire.load_key_file(path)
    for w in warnings:
        log.warning("%s", w)
    return master


class Settings:
    """What a client was configured with; checked once."""

    def __init__(
        self,
        *,
        mgr: Optional[str],
        key_file: Optional[Union[str, "os.PathLike[str]"]],
        key: Optional[bytes],
        retry: bool,
        retry_for: Optional[float],
        min_backoff: float,
        max_backoff: float,
        max_in_flight: int,
        max_frame: int,
        heartbeat: float,
        connect_timeout: float,
        agent: Optional[str],
    ) -> None:
        self.mgr = resolve_mgr(mgr)
        self.master = resolve_key(key_file, key)
        if retry_for is not None and not retry_for >= 0:
            raise ValueError("retry_for must be >= 0 seconds or None")
        if not 0 < min_backoff <= max_backoff:
            raise ValueError("backoff bounds must satisfy 0 < min_backoff <= max_backoff")
        if not isinstance(max_in_flight, int) or max_in_flight < 1:
            raise ValueError("max_in_flight must be a positive integer")
        if not heartbeat > 0 or not connect_timeout > 0:
            raise ValueError("heartbeat and connect_timeout must be positive")
        self.retry = retry
        self.retry_for = retry_for
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self.max_in_flight = max_in_flight
        self.max_frame = _wire.check_max_frame(max_frame)
        self.heartbeat = heartbeat
        self.connect_timeout = connect_timeout
        self.agent = (agent or AGENT)[:200]


def encode_submit(
    task: str,
    args: Any,
    priority: str,
    timeout: Optional[float],
    attempts: Optional[int],
    max_frame: int,
    retries: Optional[int] = None,
    want_id: bool = False,
    detach: bool = False,
    delay: Optional[float] = None,
) -> bytes:
    """The packed fields of a ``submit`` other than ``id``, checked:
    ValueError for bad options or arguments nested too deep, TypeError for
    arguments MessagePack cannot hold, FrameTooLarge if it cannot fit.
    ``want_id`` asks a manager with a task store for the task's id (see the
    module doc); ``detach`` makes the task outlive the connection, answered
    with its id (``accepted``) instead of its outcome. ``delay`` (seconds)
    runs the task that long after the manager receives it (``delay_ms``)
    instead of at once."""
    if not isinstance(task, str) or not task:
        raise ValueError("task must be a non-empty string")
    fields: Dict[str, Any] = {"task": task, "args": args}
    if priority != "normal":
        if priority not in PRIORITIES:
            raise ValueError(f"priority must be one of {', '.join(PRIORITIES)}, got {priority!r}")
        fields["priority"] = priority
    if timeout is not None:
        if not (isinstance(timeout, (int, float)) and math.isfinite(timeout) and timeout >= 0.001):
            raise ValueError(f"timeout must be at least 0.001 seconds, got {timeout!r}")
        fields["timeout_ms"] = min(math.ceil(timeout * 1000), _wire.U64_MAX)
    if attempts is not None:
        if not isinstance(attempts, int) or not 1 <= attempts <= _wire.U32_MAX:
            raise ValueError(f"attempts must be an integer from 1 to {_wire.U32_MAX}, got {attempts!r}")
        fields["attempts"] = attempts
    if retries is not None:
        if isinstance(retries, bool) or not isinstance(retries, int) or not 0 <= retries <= _wire.U32_MAX:
            raise ValueError(f"retries must be a non-negative integer, got {retries!r}")
        fields["retries"] = retries
    if detach:
        fields["detach"] = True
    elif want_id:
        fields["want_id"] = True
    if delay is not None:
        if isinstance(delay, bool) or not (isinstance(delay, (int, float)) and math.isfinite(delay) and delay >= 0):
            raise ValueError(f"delay must be a non-negative number of seconds, got {delay!r}")
        fields["delay_ms"] = min(math.ceil(delay * 1000), _wire.U64_MAX)
    if _wire.value_depth(args) > _wire.MAX_VALUE_DEPTH:
        raise ValueError(f"arguments nested deeper than {_wire.MAX_VALUE_DEPTH} levels are not accepted")
    body = _wire.pack(fields)
    size = len(_SUBMIT_HEAD) + len(body) + len(_ID_KEY) + 9 + _wire.SEAL_OVERHEAD
    if size > max_frame:
        raise FrameTooLarge(size, max_frame)
    return body


class Call:
    """One request, by ``kind``: ``submit``; ``enqueue`` (a detached submit,
    answered with the task's id); ``lookup`` (a task's outcome by id, the
    caller's ``result_request``); ``cancel_task``; ``ping``;
    ``status_request``. A submit whose connection was lost becomes a wait
    on its task (kind ``result_request``)."""

    __slots__ = (
        "kind",
        "task",
        "body",
        "retry",
        "denials",
        "first_denied",
        "rid",
        "link",
        "timer",
        "sent_at",
        "done",
        "value",
        "error",
        "on_done",
        "task_id",
        "lost",
        "lost_at",
        "tries",
        "wait",
    )

    def __init__(self, kind: str, task: str, body: bytes, retry: bool, on_done: Callable[["Call"], None]) -> None:
        self.kind = kind
        self.task = task
        self.body = body
        self.retry = retry
        self.denials = 0
        self.first_denied = 0.0
        self.rid: Optional[int] = None
        self.link: Optional[Link] = None
        self.timer: Optional[asyncio.TimerHandle] = None
        self.sent_at = 0.0
        self.done = False
        self.value: Any = None
        self.error: Optional[BaseException] = None
        self.on_done = on_done
        # The task's id once an `accepted` told it; why and when the
        # connection was lost, for a submit that waits on its task again.
        self.task_id: Optional[int] = None
        self.lost = ""
        self.lost_at = 0.0
        self.tries = 0
        # For a lookup: whether the manager should answer only once the task
        # finished.
        self.wait = False

    def outcome(self) -> Any:
        """The value, or raises the error."""
        if self.error is not None:
            raise self.error
        return self.value


class Core:
    """The loop-side client engine; see the module doc."""

    def __init__(self, settings: Settings, loop: asyncio.AbstractEventLoop) -> None:
        self.settings = settings
        self.loop = loop
        self._link: Optional[Link] = None
        self._connecting: Optional[asyncio.Task[None]] = None
        self._connect_error: Optional[Exception] = None
        self._waiting: Deque[Call] = deque()
        self._pending: Dict[int, Call] = {}
        self._next_id = 1
        self.closed = False

    # --- starting calls --------------------------------------------------

    def start(self, call: Call) -> None:
        """Sends ``call`` now, or once connected."""
        if call.done:
            return
        if self.closed:
            self.finish(call, error=ClientClosed("the client is closed"))
            return
        link = self._link
        if link is not None and link.is_open:
            self._send(link, call)
        else:
            self._waiting.append(call)
            self._ensure_connecting()

    def start_many(self, calls: "list[Call]") -> None:
        """:meth:`start` for each of ``calls``, in order."""
        for c in calls:
            self.start(c)

    def _rid(self) -> int:
        rid = self._next_id
        self._next_id = rid + 1
        return rid

    def _send(self, link: Link, call: Call) -> None:
        rid = self._rid()
        if call.kind == "submit" or call.kind == "enqueue":
            plain = b"".join((_SUBMIT_HEAD, bytes([0x80 | (1 + _fields_in(call.body))]), _ID_KEY, _wire.pack(rid), call.body[1:]))
        elif call.kind == "result_request" or call.kind == "lookup":
            wait = call.wait or call.kind == "result_request"
            plain = _wire.pack({"result_request": {"id": rid, "task_id": call.task_id, "wait": wait}})
        elif call.kind == "cancel_task":
            plain = _wire.pack({"cancel_task": {"id": rid, "task_id": call.task_id}})
        else:
            plain = _wire.pack({call.kind: {"id": rid}})
        try:
            link.send_packed(plain)
        except FrameTooLarge as e:
            self.finish(call, error=e)
            return
        call.rid = rid
        call.link = link
        call.sent_at = time.monotonic()
        self._pending[rid] = call

    def _ensure_connecting(self) -> None:
        if self._connecting is None:
            self._connecting = self.loop.create_task(self._connect())

    async def _connect(self) -> None:
        s = self.settings
        try:
            link = await Link.open(
                s.mgr,
                master=s.master,
                role="client",
                agent=s.agent,
                max_frame=s.max_frame,
                heartbeat=s.heartbeat,
                connect_timeout=s.connect_timeout,
                on_message=self._on_message,
                on_closed=self._on_closed,
            )
        except asyncio.CancelledError:
            self._connecting = None
            self._fail_waiting(ClientClosed("the client was closed while connecting"))
            raise
        except Exception as e:
            self._connecting = None
            self._connect_error = e
            self._fail_waiting(e)
            return
        self._connecting = None
        self._connect_error = None
        if self.closed:
            link.close("the client is closed")
            return
        self._link = link
        log.debug("connected to %s (%s)", s.mgr, peer_text(link.peer_agent, 80))
        while self._waiting and link.is_open:
            self._send(link, self._waiting.popleft())
        if self._waiting:
            self._ensure_connecting()

    def _fail_waiting(self, error: BaseException) -> None:
        waiting = list(self._waiting)
        self._waiting.clear()
        for c in waiting:
            if c.kind in _WAITS_AGAIN and c.lost and isinstance(error, ConnectError):
                self._wait_again_later(c, error)
            else:
                self.finish(c, error=error)

    async def connect(self) -> None:
        """Opens the connection if it is not open; raises what opening raised."""
        if self.closed:
            raise ClientClosed("the client is closed")
        if self._link is not None and self._link.is_open:
            return
        self._ensure_connecting()
        task = self._connecting
        assert task is not None
        await asyncio.shield(task)
        if self._link is None or not self._link.is_open:
            raise self._connect_error or ConnectionLost(f"connection to {self.settings.mgr} closed at once")

    # --- answers -----------------------------------------------------------

    def _on_message(self, name: str, fields: Dict[Any, Any]) -> None:
        if name == "accepted":
            # A detached submit's answer, or an attached submit's id (one
            # that comes after its reply is for nobody).
            req = _wire.get_int(fields, "id")
            asked = self._pending.get(req)
            task_id = _wire.get_int(fields, "task_id")
            if asked is not None and asked.kind == "submit":
                asked.task_id = task_id
            elif asked is not None and asked.kind == "enqueue":
                del self._pending[req]
                asked.rid = None
                asked.task_id = task_id
                self.finish(asked, value=task_id)
            return
        if name == "result":
            self._on_result(fields)
            return
        if name == "cancel_result":
            # Of a cancel_task call, or of a cancel sent for a task waited
            # on again (no call).
            req = _wire.get_int(fields, "id")
            result = _wire.get_str(fields, "result")
            call = self._pending.get(req)
            if call is not None and call.kind == "cancel_task":
                del self._pending[req]
                call.rid = None
                if result not in CANCEL_RESULTS:
                    self.finish(call, error=ProtocolError(f"unknown cancel result {peer_text(result, 40)}"))
                else:
                    self.finish(call, value=result)
            return
        if name == "reply":
            rid = fields.get("id")
            outcome = fields.get("outcome")
            if type(rid) is int and type(outcome) is dict and len(outcome) == 1:
                done = outcome.get("done")
                if type(done) is dict and "value" in done:
                    call = self._pending.get(rid)
                    if call is not None and call.kind == "submit":
                        del self._pending[rid]
                        call.rid = None
                        self.finish(call, value=done["value"])
                        return
            rid = _wire.get_int(fields, "id")
            kind, value, text, retry_ms = _wire.get_outcome(fields)
            call = self._pending.get(rid)
            if call is None or (call.kind != "submit" and call.kind != "enqueue"):
                return
            del self._pending[rid]
            call.rid = None
            if kind == "done" and call.kind == "enqueue":
                self.finish(
                    call,
                    error=ProtocolError(
                        "the manager ran the task attached and answered with its result: it predates detached tasks"
                    ),
                )
            elif kind == "done":
                self.finish(call, value=value)
            elif kind == "failed":
                self.finish(call, error=TaskFailed(call.task, text))
            else:
                self._denied(call, text, retry_ms / 1000.0)
        elif name == "pong" or name == "status":
            rid = _wire.get_int(fields, "id")
            call = self._pending.get(rid)
            if call is None or call.kind != ("ping" if name == "pong" else "status_request"):
                return
            del self._pending[rid]
            if name == "pong":
                self.finish(call, value=time.monotonic() - call.sent_at)
                return
            st = fields.get("status")
            if not isinstance(st, dict):
                raise ProtocolError("status without a status map")
            try:
                self.finish(call, value=Status.from_wire(st))
            except ProtocolError as e:
                self.finish(call, error=e)
        elif name == "error":
            text = _wire.get_str(fields, "message", "")
            link = self._link
            if link is not None:
                link.close(f"the manager said: {peer_text(text)}")
        else:
            raise ProtocolError(f"a manager may not send {peer_text(name, 40)} to a client")

    def _on_result(self, fields: Dict[Any, Any]) -> None:
        """The answer to a wait on a task whose connection was lost."""
        rid = _wire.get_int(fields, "id")
        kind, state = _wire.one_entry(fields.get("state"), "state")
        call = self._pending.get(rid)
        if call is None or (call.kind != "result_request" and call.kind != "lookup"):
            return
        del self._pending[rid]
        call.rid = None
        if call.kind == "lookup":
            self._on_lookup(call, kind, state)
            return
        if kind == "done":
            if "value" not in state:
                raise ProtocolError("state done has no value")
            self.finish(call, value=state["value"])
        elif kind == "failed":
            self.finish(call, error=TaskFailed(call.task, _wire.get_str(state, "error")))
        elif kind == "unknown":
            why = (
                f"{call.lost}; the manager reached again does not know task {call.task_id} (it drops an "
                "attached task whose connection ends, unless restarted with its task store)"
            )
            self.finish(call, error=ConnectionLost(why))
        elif kind in ("queued", "running"):
            call.link = None
            call.timer = self.loop.call_later(_WAIT_AGAIN, self._retry, call)
        else:
            raise ProtocolError(f"unknown task state {peer_text(kind, 40)}")

    def _on_lookup(self, call: Call, kind: str, state: Dict[Any, Any]) -> None:
        """The manager's answer to the caller's ``result_request``."""
        assert call.task_id is not None
        if kind == "done":
            if "value" not in state:
                raise ProtocolError("state done has no value")
            self.finish(call, value=state["value"])
        elif kind == "failed":
            self.finish(call, error=TaskFailed(call.task, _wire.get_str(state, "error"), call.task_id))
        elif kind == "unknown":
            self.finish(call, error=UnknownTask(call.task_id))
        elif kind in ("queued", "running"):
            if not call.wait:
                self.finish(call, error=NotReady(call.task_id, kind))
                return
            # The manager holds a bounded number of waits and answered at once.
            call.link = None
            call.timer = self.loop.call_later(_WAIT_AGAIN, self._retry, call)
        else:
            raise ProtocolError(f"unknown task state {peer_text(kind, 40)}")

    def _wait_again(self, call: Call, reason: str) -> None:
        """``call``'s connection ended before its answer: wait on its task
        again by id (see the module doc)."""
        call.rid = None
        call.link = None
        if call.kind == "result_request":
            # Lost again while waiting: on the backoff, within the bound.
            self._wait_again_later(call, ConnectionLost(reason))
            return
        call.kind = "result_request"
        call.lost = f"connection to the manager lost: {reason}"
        call.lost_at = time.monotonic()
        log.info(
            "connection to the manager lost while waiting on task %d (%s); waiting on it again by id",
            call.task_id,
            peer_text(reason, 200),
        )
        self.start(call)

    def _wait_again_later(self, call: Call, error: BaseException) -> None:
        """Another try to reach the manager for ``call``'s wait failed with
        ``error``: tries again on the backoff, or gives up past ``retry_for``."""
        s = self.settings
        call.tries += 1
        delay = backoff_delay(call.tries, _REATTACH_BASE, s.min_backoff, s.max_backoff)
        waited = time.monotonic() - call.lost_at
        if s.retry_for is not None and waited + delay > s.retry_for:
            why = f"{call.lost}; gave up waiting on task {call.task_id} again after {waited:.1f} s: {error}"
            self.finish(call, error=ConnectionLost(why))
            return
        log.debug("task %d: %s; trying again in %.2f s", call.task_id, error, delay)
        call.timer = self.loop.call_later(delay, self._retry, call)

    def _denied(self, call: Call, reason: str, retry_after: float) -> None:
        s = self.settings
        if not call.retry:
            self.finish(call, error=Denied(call.task, reason, retry_after))
            return
        now = time.monotonic()
        if call.denials == 0:
            call.first_denied = now
        call.denials += 1
        delay = backoff_delay(call.denials, retry_after, s.min_backoff, s.max_backoff)
        waited = now - call.first_denied
        if s.retry_for is not None and waited + delay > s.retry_for:
            self.finish(call, error=Overloaded(call.task, reason, call.denials, waited))
            return
        call.timer = self.loop.call_later(delay, self._retry, call)

    def _retry(self, call: Call) -> None:
        call.timer = None
        self.start(call)

    def _on_closed(self, link: Link, reason: str) -> None:
        if self._link is link:
            self._link = None
        lost = [c for c in self._pending.values() if c.link is link]
        for c in lost:
            if c.rid is not None:
                self._pending.pop(c.rid, None)
            if c.kind == "lookup" and c.retry and not self.closed:
                # A task's outcome stays on the manager: ask again.
                c.rid = None
                c.link = None
                if not c.lost:
                    c.lost = f"connection to the manager lost: {reason}"
                    c.lost_at = time.monotonic()
                self._wait_again_later(c, ConnectionLost(reason))
            elif c.kind == "submit" and c.retry and c.task_id is not None and not self.closed:
                self._wait_again(c, reason)
            elif c.kind == "result_request" and not self.closed:
                self._wait_again(c, reason)
            else:
                self.finish(c, error=ConnectionLost(f"connection to the manager lost: {reason}"))

    # --- ending calls --------------------------------------------------------

    def finish(self, call: Call, value: Any = None, error: Optional[BaseException] = None) -> None:
        """Ends ``call`` with ``value`` or ``error`` (once)."""
        if call.done:
            return
        call.value = value
        call.error = error
        call.done = True
        call.link = None
        if call.timer is not None:
            call.timer.cancel()
            call.timer = None
        call.on_done(call)

    def cancel_many(self, calls: "list[Call]") -> None:
        """:meth:`cancel` for each of ``calls``."""
        for c in calls:
            self.cancel(c)

    def drop(self, call: Call) -> None:
        """Forgets ``call``, whose caller stopped waiting for its answer."""
        if call.rid is not None:
            self._pending.pop(call.rid, None)
        try:
            self._waiting.remove(call)
        except ValueError:
            pass
        self.finish(call, error=ClientClosed("the caller stopped waiting"))

    def cancel(self, call: Call) -> None:
        """Asks the manager to cancel a sent submit; a submit not sent yet
        (waiting to connect, or to be resent after a deny) ends here."""
        if call.done:
            return
        link = call.link
        if call.rid is not None and link is not None:
            if link.is_open and call.kind == "result_request":
                # Waited on again: the task is not a submit of this connection.
                link.send({"cancel_task": {"id": self._rid(), "task_id": call.task_id}})
            elif link.is_open:
                link.send({"cancel": {"id": call.rid}})
            return
        try:
            self._waiting.remove(call)
        except ValueError:
            pass
        if call.kind == "result_request":
            why = f"{call.lost}; stopped waiting on task {call.task_id}, cancelled while reconnecting (it may still run)"
            self.finish(call, error=ConnectionLost(why))
            return
        self.finish(call, error=TaskFailed(call.task, CANCELLED))

    async def close(self) -> None:
        """Fails everything pending with ClientClosed and closes the link."""
        self.closed = True
        err = ClientClosed("the client was closed")
        for c in list(self._waiting):
            self.finish(c, error=err)
        self._waiting.clear()
        for c in list(self._pending.values()):
            self.finish(c, error=err)
        self._pending.clear()
        if self._connecting is not None:
            self._connecting.cancel()
            try:
                await self._connecting
            except (asyncio.CancelledError, ArgonError):
                pass
        link = self._link
        self._link = None
        if link is not None:
            link.close("the client was closed")
            await link.wait_closed(_CLOSE_WAIT)

    @property
    def in_flight(self) -> int:
        """Calls sent and not answered yet."""
        return len(self._pending)


def check_task_id(task_id: int) -> None:
    """ValueError (TypeError) unless ``task_id`` can be a task's id (a u64)."""
    if isinstance(task_id, bool) or not isinstance(task_id, int):
        raise TypeError(f"a task id is an int, got {type(task_id).__name__}")
    if not 0 <= task_id <= _wire.U64_MAX:
        raise ValueError(f"a task id is from 0 to {_wire.U64_MAX}, got {task_id}")


def _fields_in(body: bytes) -> int:
    first = body[0]
    if 0x80 <= first <= 0x8F:
        return first & 0x0F
    raise AssertionError("submit fields are a fixmap")


def backoff_delay(n: int, retry_after: float, lo: float, hi: float) -> float:
    """Delay before the n-th resend after a deny: base × (1 + ln n) times a
    jitter of 0–25 %, base = max(lo, retry_after capped at hi), at most hi."""
    base = max(lo, min(retry_after, hi))
    return float(min(base * (1.0 + math.log(max(n, 1))) * (1.0 + random.random() / 4.0), hi))


def submit_options(opts: Mapping[str, Any]) -> None:
    """Rejects option names a submit does not take."""
    unknown = set(opts) - {"priority", "timeout", "attempts", "retry"}
    if unknown:
        raise TypeError(f"unexpected option(s): {', '.join(sorted(unknown))}")
