"""The connection layer against peers that misbehave: scripted fake
managers on 127.0.0.1 (refusals, foreign servers, oversized frames, a
manager that falls silent) and the real manager at its connection limit."""

from __future__ import annotations

import asyncio
import os
from typing import Awaitable, Callable, List

import pytest

from argon_tasks import AsyncClient, AtConnectionLimit, Client, ConnectError, ConnectionLost
from argon_tasks import _wire

from conftest import WAIT, Manager, Proc

KEY = b"a test key that is long enough to be a key"

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def with_fake_manager(handler: Handler, body: Callable[[str], Awaitable[None]]) -> None:
    async def guarded(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            await asyncio.wait_for(handler(r, w), WAIT)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.TimeoutError):
            pass
        finally:
            w.close()

    server = await asyncio.start_server(guarded, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        await asyncio.wait_for(body(f"127.0.0.1:{port}"), WAIT)
    finally:
        server.close()
        await server.wait_closed()


async def handshake(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> "tuple[_wire.Sealer, _wire.Opener]":
    """The manager's side of the handshake, as PROTOCOL.md §3 describes it."""
    nonce = os.urandom(32)
    w.write(_wire.hello_frame(nonce))
    theirs = await r.readexactly(4 + _wire.HELLO_LEN)
    i2r, r2i = _wire.session_keys(_wire.master_key(KEY), theirs[9:], nonce)
    sealer, opener = _wire.Sealer(r2i), _wire.Opener(i2r)
    w.write(sealer.seal(_wire.pack({"auth": {"version": 1, "role": "manager", "agent": "fake"}}), 4096))
    length = int.from_bytes(await r.readexactly(4), "big")
    auth = _wire.unpack(opener.open(await r.readexactly(length)))
    assert auth["auth"]["role"] == "client"
    return sealer, opener


def connect_fails(handler: Handler, exc: type, match: str) -> None:
    async def body(addr: str) -> None:
        async with AsyncClient(addr, key=KEY, connect_timeout=2) as c:
            with pytest.raises(exc, match=match):
                await c.ping()

    asyncio.run(with_fake_manager(handler, body))


def test_refusal_is_at_connection_limit() -> None:
    async def refuse(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(bytes.fromhex("00000006 4152474e 00 02"))
        await w.drain()

    connect_fails(refuse, AtConnectionLimit, r"too many handshakes in progress")


def test_a_foreign_server_is_not_a_manager() -> None:
    async def http(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        await w.drain()
        await r.read(100)

    connect_fails(http, ConnectError, r"is not an Argon manager")


def test_an_oversized_auth_frame_is_refused_unread() -> None:
    async def big(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(_wire.hello_frame(os.urandom(32)) + (5000).to_bytes(4, "big"))
        await w.drain()
        await r.read(100)

    connect_fails(big, ConnectError, r"frame of 5000 bytes exceeds the limit of 4096 bytes")


def test_a_silent_manager_is_taken_for_gone() -> None:
    async def silent(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await handshake(r, w)
        while await r.read(4096):
            pass

    async def body(addr: str) -> None:
        async with AsyncClient(addr, key=KEY, heartbeat=0.1) as c:
            with pytest.raises(ConnectionLost, match=r"nothing heard from the manager .* for 3 heartbeat intervals"):
                await c.run("echo", 1)

    asyncio.run(with_fake_manager(silent, body))


def test_a_message_a_manager_may_not_send_closes_the_link() -> None:
    async def rude(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        sealer, _ = await handshake(r, w)
        await r.readexactly(4)
        w.write(sealer.seal(_wire.pack({"assign": {"run_id": 1}}), 1 << 20))
        await w.drain()
        await r.read(100)

    async def body(addr: str) -> None:
        async with AsyncClient(addr, key=KEY) as c:
            with pytest.raises(ConnectionLost, match=r"a manager may not send assign to a client"):
                await c.ping()

    asyncio.run(with_fake_manager(rude, body))


def test_replayed_counter_closes_the_link() -> None:
    async def replay(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        sealer, _ = await handshake(r, w)
        await r.readexactly(4)
        frame = sealer.seal(_wire.pack({"heartbeat": {}}), 1 << 20)
        w.write(frame + frame)
        await w.drain()
        await r.read(100)

    async def body(addr: str) -> None:
        async with AsyncClient(addr, key=KEY) as c:
            with pytest.raises(ConnectionLost, match=r"frame counter 1, expected 2"):
                await c.ping()

    asyncio.run(with_fake_manager(replay, body))


def test_the_real_manager_at_its_limit_refuses(argon: str, key_file: str, procs: List[Proc]) -> None:
    proc = Proc([argon, "manager", "--host", "127.0.0.1", "--port", "0", "--key", key_file, "--max-connections", "1"])
    procs.append(proc)
    addr = proc.wait_line(r"argon manager listening on (\S+)", stream="out").group(1)
    mgr = Manager(proc, addr)
    with Client(mgr.addr, key_file) as first, Client(mgr.addr, key_file) as second:
        assert first.ping() > 0
        with pytest.raises(AtConnectionLimit, match="too many connections"):
            second.ping()
