"""The asyncio client against a real manager, Rust and Python workers."""

from __future__ import annotations

import asyncio
import threading
from typing import Any, AsyncIterator, Callable

import pytest

from argon_tasks import AsyncClient, ClientClosed, Denied, TaskFailed, Worker

from conftest import WAIT, Manager, Proc, ThreadWorker


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, WAIT))


def test_async_run_submit_ping_status(manager: Manager, rust_worker: Proc, key_file: str) -> None:
    async def main() -> None:
        async with AsyncClient(manager.addr, key_file) as c:
            assert await c.run("echo", {"x": [1, 2]}) == {"x": [1, 2]}
            handles = [await c.submit("sleep", n) for n in (30, 10, 20)]
            assert await asyncio.gather(*handles) == [30, 10, 20]
            assert await c.ping() > 0
            st = await c.status()
            assert st.workers == 1 and st.completed >= 4
            with pytest.raises(TaskFailed, match="sleep takes a number"):
                await c.run("sleep", "x")

    run(main())


def test_async_map_order_with_async_input(manager: Manager, rust_worker: Proc, key_file: str) -> None:
    async def items() -> AsyncIterator[int]:
        for i in range(500):
            yield i

    async def main() -> None:
        async with AsyncClient(manager.addr, key_file) as c:
            out = [r async for r in c.map("echo", items(), concurrency=40)]
            assert out == list(range(500))
            mixed = [r async for r in c.map("sleep", [3, "x", 1], return_exceptions=True)]
            assert mixed[0] == 3 and mixed[2] == 1 and isinstance(mixed[1], TaskFailed)

    run(main())


def test_cancelling_the_awaiting_coroutine_cancels_the_task(manager: Manager, key_file: str, serve: Callable[..., ThreadWorker]) -> None:
    w = Worker(manager.addr, key_file, 2)
    started = threading.Event()
    cancelled = threading.Event()

    @w.task("forever")
    async def forever(_: Any) -> None:
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    serve(w)

    async def main() -> None:
        async with AsyncClient(manager.addr, key_file) as c:
            job = asyncio.ensure_future(c.run("forever"))
            await asyncio.get_running_loop().run_in_executor(None, started.wait, WAIT)
            job.cancel()
            with pytest.raises(asyncio.CancelledError):
                await job
            ok = await asyncio.get_running_loop().run_in_executor(None, cancelled.wait, WAIT)
            assert ok, "the cancel did not reach the worker"

    run(main())


def test_async_deny_and_close(start_manager: Callable[..., Manager], start_rust_worker: Callable[..., Proc], key_file: str) -> None:
    mgr = start_manager(queue_factor=1)
    start_rust_worker(mgr, capacity=1)

    async def main() -> None:
        c = AsyncClient(mgr.addr, key_file, retry=False)
        first = await c.submit("sleep", 10_000)
        second = await c.submit("sleep", 10_000)
        with pytest.raises(Denied, match="queue full"):
            await c.run("sleep", 1)
        await c.close()
        for h in (first, second):
            with pytest.raises(ClientClosed):
                await h
        with pytest.raises(ClientClosed):
            await c.run("echo", 1)

    run(main())


def test_max_in_flight_bounds_pending_calls(manager: Manager, rust_worker: Proc, key_file: str) -> None:
    async def main() -> None:
        async with AsyncClient(manager.addr, key_file, max_in_flight=3) as c:
            handles = [await c.submit("sleep", 50) for _ in range(3)]
            fourth = asyncio.ensure_future(c.submit("sleep", 1))
            await asyncio.sleep(0)
            assert not fourth.done()
            await handles[0]
            h4 = await asyncio.wait_for(fourth, WAIT)
            assert await h4 == 1

    run(main())
