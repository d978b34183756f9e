"""One connection to a manager, from the initiator's side, on asyncio.

A :class:`Link` does the hello exchange, derives the session keys, trades
``auth`` frames, and then carries sealed messages both ways: it hands every
message but heartbeats to a callback as it arrives, batches outgoing frames
into one write per event-loop turn, sends heartbeats when it has been quiet
and closes a connection whose peer has been silent for three heartbeat
intervals. Every frame length is checked against a limit before its body is
buffered.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from typing import Any, Callable, Dict, List, Optional, Tuple

from cryptography.exceptions import InvalidTag

from . import _wire
from ._text import peer_text
from .errors import (
    AtConnectionLimit,
    AuthFailed,
    ConnectError,
    ConnectionLost,
    FrameTooLarge,
    ProtocolError,
)

log = logging.getLogger("argon_tasks")

OnMessage = Callable[[str, Dict[Any, Any]], None]
OnClosed = Callable[["Link", str], None]

_HEARTBEAT = _wire.pack({"heartbeat": {}})
_HELLO, _AUTH, _OPEN, _CLOSED = range(4)
_SILENT_TICKS = 3
_CLOSE_GRACE = 5.0
MAX_OUTGOING = 64 * 1024 * 1024
"""Bytes that may wait in the socket's send buffer before the link gives
up on a peer that does not read (at least two frames' worth)."""


def split_addr(addr: str) -> Tuple[str, int]:
    """(host, port) of ``HOST:PORT`` or ``[V6]:PORT``; ValueError otherwise."""
    host, sep, port = addr.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"manager address {addr!r} is not HOST:PORT")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


class Link(asyncio.Protocol):
    """A handshaken, sealed connection to a manager; see the module doc."""

    def __init__(
        self,
        *,
        addr: str,
        master: bytes,
        role: str,
        agent: str,
        max_frame: int,
        heartbeat: float,
        on_message: OnMessage,
        on_closed: OnClosed,
    ) -> None:
        self.addr = addr
        self.role = role
        self._master = master
        self._agent = agent
        self.max_frame = max_frame
        self.send_limit = max_frame
        self.max_outgoing = max(MAX_OUTGOING, 2 * max_frame)
        self._heartbeat = heartbeat
        self._on_message = on_message
        self._on_closed = on_closed
        self._loop = asyncio.get_running_loop()
        self._ready: asyncio.Future[None] = self._loop.create_future()
        self._state = _HELLO
        self._nonce = os.urandom(_wire.NONCE_LEN)
        self._transport: Optional[asyncio.Transport] = None
        self._sealer: Optional[_wire.Sealer] = None
        self._opener: Optional[_wire.Opener] = None
        self._chunks: List[bytes] = []
        self._chunks_len = 0
        self._need = 4
        self._out: List[bytes] = []
        self._flush_handle: Optional[asyncio.Handle] = None
        self._paused = False
        self._drain_waiters: List[asyncio.Future[None]] = []
        self._timer: Optional[asyncio.TimerHandle] = None
        self._sent = False
        self._heard = False
        self._silent = 0
        self.close_reason: Optional[str] = None
        self.peer_agent = ""
        self._was_open = False
        self._notified = False
        self._lost: asyncio.Future[None] = self._loop.create_future()

    # --- opening ---------------------------------------------------------

    @classmethod
    async def open(
        cls,
        addr: str,
        *,
        master: bytes,
        role: str,
        agent: str,
        max_frame: int,
        heartbeat: float,
        connect_timeout: float,
        on_message: OnMessage,
        on_closed: OnClosed,
    ) -> "Link":
        """Connects to ``addr`` and completes the handshake, within
        ``connect_timeout`` for the TCP connect and again for the handshake.

        Raises ConnectError, AtConnectionLimit or AuthFailed.
        """
        host, port = split_addr(addr)
        loop = asyncio.get_running_loop()
        link = cls(
            addr=addr,
            master=master,
            role=role,
            agent=agent,
            max_frame=max_frame,
            heartbeat=heartbeat,
            on_message=on_message,
            on_closed=on_closed,
        )
        try:
            await asyncio.wait_for(loop.create_connection(lambda: link, host, port), connect_timeout)
        except asyncio.TimeoutError:
            raise ConnectError(f"cannot connect to {addr}: no answer within {connect_timeout:g} s") from None
        except OSError as e:
            raise ConnectError(f"cannot connect to {addr}: {e.strerror or e}") from e
        try:
            await asyncio.wait_for(asyncio.shield(link._ready), connect_timeout)
        except asyncio.TimeoutError:
            link.close("handshake timed out")
            raise ConnectError(
                f"handshake with {addr} did not finish within {connect_timeout:g} s"
            ) from None
        except BaseException:
            link.close("handshake abandoned")
            raise
        return link

    # --- asyncio.Protocol ------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        transport.write(_wire.hello_frame(self._nonce))

    def data_received(self, data: bytes) -> None:
        if self._state == _CLOSED:
            return  # read and dropped while closing (see close)
        if self._chunks:
            self._chunks.append(data)
            self._chunks_len += len(data)
            if self._chunks_len < self._need:
                return
            data = b"".join(self._chunks)
            self._chunks.clear()
        view = memoryview(data)
        pos = 0
        end = len(data)
        while self._state != _CLOSED:
            if end - pos < 4:
                self._need = 4
                break
            length = int.from_bytes(view[pos : pos + 4], "big")
            if not self._length_ok(length):
                return
            stop = pos + 4 + length
            if stop > end:
                self._need = 4 + length
                break
            self._frame(view[pos + 4 : stop])
            pos = stop
        if pos < end and self._state != _CLOSED:
            rest = data[pos:]
            self._chunks.append(rest)
            self._chunks_len = len(rest)

    def eof_received(self) -> Optional[bool]:
        self._set_reason(f"{self._peer_name()} closed the connection")
        return None

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self._state = _CLOSED
        if self._timer is not None:
            self._timer.cancel()
        if self._flush_handle is not None:
            self._flush_handle.cancel()
        self._out.clear()
        self._chunks.clear()
        if exc is not None:
            self._set_reason(f"connection to {self.addr} failed: {exc}")
        self._set_reason(f"{self._peer_name()} closed the connection")
        reason = self.close_reason or "closed"
        for w in self._drain_waiters:
            if not w.done():
                w.set_exception(ConnectionLost(reason))
        self._drain_waiters.clear()
        if not self._ready.done():
            self._ready.set_exception(ConnectError(f"handshake with {self.addr} failed: {reason}"))
        if not self._lost.done():
            self._lost.set_result(None)
        self._notify_closed()

    def _notify_closed(self) -> None:
        if self._was_open and not self._notified:
            self._notified = True
            self._on_closed(self, self.close_reason or "closed")

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        for w in self._drain_waiters:
            if not w.done():
                w.set_result(None)
        self._drain_waiters.clear()

    # --- frames ----------------------------------------------------------

    def _length_ok(self, length: int) -> bool:
        if self._state == _HELLO:
            if length in (_wire.HELLO_LEN, _wire.REFUSAL_LEN):
                return True
            self._fail_handshake(ConnectError(f"{self.addr} is not an Argon manager (hello of {length} bytes)"))
            return False
        limit = _wire.AUTH_FRAME_MAX if self._state == _AUTH else self.max_frame
        if length <= limit:
            return True
        err = f"frame of {length} bytes exceeds the limit of {limit} bytes"
        if self._state == _AUTH:
            self._fail_handshake(ConnectError(f"handshake with {self.addr} failed: {err}"))
        else:
            self.close(f"{self._peer_name()} sent a {err}")
        return False

    def _frame(self, body: memoryview) -> None:
        if self._state == _OPEN:
            assert self._opener is not None
            try:
                plain = self._opener.open(body)
            except InvalidTag:
                self.close(f"a frame from {self._peer_name()} does not authenticate")
                return
            except ProtocolError as e:
                self.close(f"bad frame from {self._peer_name()}: {e}")
                return
            self._heard = True
            if plain == _HEARTBEAT:
                return
            try:
                msg = _wire.unpack(plain)
                if type(msg) is dict and len(msg) == 1:
                    ((name, fields),) = msg.items()
                    if type(name) is str and type(fields) is dict:
                        self._on_message(name, fields)
                        return
                name, fields = _wire.one_entry(msg, "message")
                self._on_message(name, fields)
            except ProtocolError as e:
                self.violation(str(e))
        elif self._state == _HELLO:
            self._hello(bytes(body))
        elif self._state == _AUTH:
            self._auth(body)

    def _hello(self, body: bytes) -> None:
        if body[:4] != _wire.MAGIC:
            self._fail_handshake(ConnectError(f"{self.addr} is not an Argon manager (bad magic)"))
        elif len(body) == _wire.REFUSAL_LEN:
            if body[4] != 0:
                self._fail_handshake(ConnectError(f"{self.addr} sent a malformed hello"))
                return
            why = _wire.REFUSAL_REASONS.get(body[5], f"reason code {body[5]}")
            self._fail_handshake(AtConnectionLimit(self.addr, why))
        elif body[4] != _wire.VERSION:
            self._fail_handshake(
                ConnectError(f"{self.addr} speaks protocol version {body[4]}, this client {_wire.VERSION}")
            )
        else:
            i2r, r2i = _wire.session_keys(self._master, self._nonce, body[5:])
            self._sealer = _wire.Sealer(i2r)
            self._opener = _wire.Opener(r2i)
            self._state = _AUTH
            auth = {"auth": {"version": _wire.VERSION, "role": self.role, "agent": self._agent}}
            assert self._transport is not None
            self._transport.write(self._sealer.seal(_wire.pack(auth), _wire.AUTH_FRAME_MAX))

    def _auth(self, body: memoryview) -> None:
        assert self._opener is not None
        try:
            plain = self._opener.open(body)
        except InvalidTag:
            self._fail_handshake(
                AuthFailed(f"authentication with {self.addr} failed: the manager holds another key")
            )
            return
        except ProtocolError as e:
            self._fail_handshake(ConnectError(f"handshake with {self.addr} failed: {e}"))
            return
        try:
            name, fields = _wire.one_entry(_wire.unpack(plain), "auth message")
            if name != "auth":
                raise ProtocolError(f"first sealed message is {peer_text(name, 40)}, not auth")
            version = _wire.get_int(fields, "version")
            role = _wire.get_str(fields, "role")
            agent = _wire.get_str(fields, "agent", "")
        except ProtocolError as e:
            self._fail_handshake(ConnectError(f"handshake with {self.addr} failed: {e}"))
            return
        if version != _wire.VERSION or role != "manager":
            self._fail_handshake(
                ConnectError(
                    f"handshake with {self.addr} failed: peer is {peer_text(role, 40)} "
                    f"version {version}, expected manager version {_wire.VERSION}"
                )
            )
            return
        self.peer_agent = agent
        self._state = _OPEN
        self._was_open = True
        self._timer = self._loop.call_later(self._heartbeat, self._tick)
        self._ready.set_result(None)

    def _fail_handshake(self, err: Exception) -> None:
        if not self._ready.done():
            self._ready.set_exception(err)
        self.close(str(err))

    # --- sending ---------------------------------------------------------

    def send(self, message: Any) -> None:
        """Seals and queues ``message``; it is written at the end of this
        event-loop turn. FrameTooLarge (nothing sent) if it does not fit;
        ConnectionLost if the link is closed."""
        self.send_packed(_wire.pack(message))

    def send_packed(self, plain: bytes) -> None:
        """Like :meth:`send` for an already MessagePack-encoded message."""
        if self._state != _OPEN:
            raise ConnectionLost(self.close_reason or f"connection to {self.addr} is not open")
        assert self._sealer is not None
        self._out.append(self._sealer.seal(plain, self.send_limit))
        self._sent = True
        if self._flush_handle is None:
            self._flush_handle = self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_handle = None
        if self._out and self._transport is not None and self._state != _CLOSED:
            data = b"".join(self._out) if len(self._out) > 1 else self._out[0]
            self._out.clear()
            self._transport.write(data)
            waiting = self._transport.get_write_buffer_size()
            if waiting > self.max_outgoing:
                self.close(f"{self._peer_name()} does not read: {waiting} bytes wait to be sent")

    @property
    def is_open(self) -> bool:
        """Whether messages can be sent."""
        return self._state == _OPEN

    @property
    def write_paused(self) -> bool:
        """Whether the socket's send buffer is above its high-water mark."""
        return self._paused

    async def drain(self) -> None:
        """Waits while the socket's send buffer is above its high-water mark."""
        if not self._paused:
            return
        fut: asyncio.Future[None] = self._loop.create_future()
        self._drain_waiters.append(fut)
        await fut

    # --- heartbeats and closing -----------------------------------------

    def _tick(self) -> None:
        if self._state != _OPEN:
            return
        if self._heard:
            self._silent = 0
        else:
            self._silent += 1
            if self._silent >= _SILENT_TICKS:
                self.close(
                    f"nothing heard from {self._peer_name()} for {_SILENT_TICKS} heartbeat intervals "
                    f"({_SILENT_TICKS * self._heartbeat:g} s)"
                )
                return
        self._heard = False
        if not self._sent:
            self.send_packed(_HEARTBEAT)
        self._sent = False
        self._timer = self._loop.call_later(self._heartbeat, self._tick)

    def violation(self, detail: str) -> None:
        """Closes the link over a message the peer may not send; a worker
        first tells the manager with an ``error``."""
        log.warning("protocol violation by %s: %s", self._peer_name(), peer_text(detail))
        if self.role == "worker" and self._state == _OPEN:
            try:
                self.send({"error": {"message": detail[:1000]}})
            except (ConnectionLost, FrameTooLarge):
                pass
        self.close(f"protocol violation by {self._peer_name()}: {detail}")

    def close(self, reason: str) -> None:
        """Closes the link after writing what is queued; ``reason`` is what
        pending calls are told.

        The close is a half-close: the link sends its end of stream and
        reads (and drops) what the manager still sends until the manager
        closes its end too, at most ``_CLOSE_GRACE`` seconds. Closing the
        socket with unread bytes in it would make the kernel reset the
        connection, which the manager logs as a failure; an end of stream
        is the protocol's clean close (the manager's "closed by peer").
        :meth:`wait_closed` waits for the manager's end."""
        self._set_reason(reason)
        if self._state == _CLOSED:
            return
        self._state = _CLOSED
        self._chunks.clear()
        if self._out and self._transport is not None:
            self._transport.write(b"".join(self._out))
        self._out.clear()
        if self._timer is not None:
            self._timer.cancel()
        transport = self._transport
        if transport is not None and not transport.is_closing():
            if transport.can_write_eof():
                transport.write_eof()
            else:
                transport.close()
            self._loop.call_later(_CLOSE_GRACE, transport.abort)
        self._loop.call_soon(self._notify_closed)

    async def wait_closed(self, timeout: float) -> None:
        """After :meth:`close`: waits until the manager closed its end too,
        at most ``timeout`` seconds; then the socket is dropped."""
        if self._transport is None or self._lost.done():
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._lost), timeout)
        except asyncio.TimeoutError:
            self._transport.abort()

    def _set_reason(self, reason: str) -> None:
        if self.close_reason is None:
            self.close_reason = reason

    def _peer_name(self) -> str:
        return f"the manager at {self.addr}"
