"""A task waited on across a manager crash: with retry on, the client asks
for its task's id, which a manager with a task store tells; when that
manager is killed and another starts on the same port and store, the
client waits on the id again and gets the task's result. It gives up past
``retry_for`` when no manager comes back."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Any, Callable, List

import pytest

from argon_tasks import AsyncClient, Client, ConnectionLost

from conftest import WAIT, Manager, Proc, eventually


class Durable:
    """Managers over one task store (recovery grace 1 s), one at a time on
    one port."""

    def __init__(self, argon: str, key_file: str, procs: List[Proc], tmp: Path) -> None:
        self.config = tmp / "manager.toml"
        self.config.write_text(f'[manager]\npersist = "{tmp / "store"}"\nrecovery_grace = "1s"\n')
        self.args = [argon, "manager", "--host", "127.0.0.1", "--key", key_file, "--config", str(self.config)]
        self.procs = procs
        self.current = self.start(0)

    def start(self, port: int) -> Manager:
        proc = Proc(self.args + ["--port", str(port)])
        self.procs.append(proc)
        m = proc.wait_line(r"argon manager listening on (\S+)", stream="out")
        self.current = Manager(proc, m.group(1))
        return self.current

    def crash(self) -> None:
        """kill -9 of the manager."""
        self.current.proc.stop(signal.SIGKILL)


def test_a_task_is_waited_on_again_across_a_manager_crash(
    argon: str, key_file: str, procs: List[Proc], start_rust_worker: Callable[..., Proc], tmp_path: Path
) -> None:
    d = Durable(argon, key_file, procs, tmp_path)
    start_rust_worker(d.current, 1)
    with Client(d.current.addr, key_file, retry_for=60) as c:
        task = c.submit("sleep", [1500, "x"])
        eventually(lambda: task.task_id is not None, what="the task's id to be told")
        d.crash()
        # Down until the run ended: the worker keeps its outcome meanwhile.
        time.sleep(2.5)
        d.start(d.current.port)
        assert task.result(WAIT) == [1500, "x"]


def test_the_async_client_waits_again_and_gives_up_past_retry_for(
    argon: str, key_file: str, procs: List[Proc], start_rust_worker: Callable[..., Proc], tmp_path: Path
) -> None:
    d = Durable(argon, key_file, procs, tmp_path)
    worker = start_rust_worker(d.current, 1)
    addr, port = d.current.addr, d.current.port

    async def across_a_crash(retry_for: float, restart: bool) -> Any:
        async with AsyncClient(addr, key_file, retry_for=retry_for) as c:
            task = await c.submit("sleep", [1000, "y"])
            while task.task_id is None:
                await asyncio.sleep(0.01)
            d.crash()
            if restart:
                await asyncio.sleep(0.3)
                d.start(port)
            return await asyncio.wait_for(task.result(), WAIT)

    assert asyncio.run(across_a_crash(60, True)) == [1000, "y"]
    worker.wait_line(r"registered as worker \d+")
    started = time.monotonic()
    with pytest.raises(ConnectionLost, match=r"gave up waiting on task \d+ again"):
        asyncio.run(across_a_crash(1.0, False))
    assert time.monotonic() - started < WAIT


def test_a_task_cancelled_while_waiting_again_stops_the_wait(
    argon: str, key_file: str, procs: List[Proc], start_rust_worker: Callable[..., Proc], tmp_path: Path
) -> None:
    d = Durable(argon, key_file, procs, tmp_path)
    start_rust_worker(d.current, 1)
    with Client(d.current.addr, key_file, retry_for=60) as c:
        task = c.submit("sleep", [3000])
        eventually(lambda: task.task_id is not None, what="the task's id to be told")
        d.crash()
        eventually(lambda: task._call.lost != "", what="the client to notice the loss")
        task.cancel()
        with pytest.raises(ConnectionLost, match=r"stopped waiting on task \d+, cancelled while reconnecting"):
            task.result(WAIT)
