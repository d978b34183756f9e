"""Worker and client correctness against a real manager: cancelled runs
give their slots back, process tasks are killed when they time out or are
cancelled, a timed-out wait leaves no asyncio warning behind, and closing a
client is no warning in the manager's log."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import textwrap
import time
from pathlib import Path
from typing import Any, Dict, List

import pytest

from argon_tasks import AsyncClient, Client, TaskFailed

from conftest import WAIT, Manager, Proc, eventually

MODULE = """
import asyncio
import os
import time
from argon_tasks import Worker, current_run

worker = Worker(capacity=4, stop_timeout=30)

@worker.task("a_nap")
async def a_nap(seconds):
    await asyncio.sleep(seconds)
    return seconds

@worker.task("s_nap")
def s_nap(seconds):
    run = current_run()
    run.cancelled.wait(seconds)
    return seconds

@worker.task("hog", thread=False)
def hog(args):
    # Holds the worker's event loop, so that an assign and its cancel
    # arriving meanwhile are read together.
    path, ms = args
    open(path, "w").close()
    time.sleep(ms / 1000)
    return ms

@worker.task("spin", process=True)
def spin(path):
    with open(path + ".tmp", "w") as f:
        f.write(str(os.getpid()))
    os.rename(path + ".tmp", path)
    while True:
        pass

@worker.task("square", process=True)
def square(n):
    return {"pid": os.getpid(), "square": n * n}

@worker.task("p_boom", process=True)
def p_boom(n):
    raise ValueError(f"bad value {n}")
"""


def start_worker(python: str, tmp_path: Path, mgr: Manager, key: str, procs: List[Proc], capacity: int = 4) -> Proc:
    (tmp_path / "fixtasks.py").write_text(textwrap.dedent(MODULE))
    env = dict(os.environ, ARGON_MGR=mgr.addr, ARGON_KEY=key)
    proc = Proc(
        [python, "-m", "argon_tasks", "worker", "fixtasks:worker", "--capacity", str(capacity)], env=env, cwd=str(tmp_path)
    )
    procs.append(proc)
    proc.wait_line(r"registered with the manager")
    return proc


def idle(c: Client, capacity: int) -> bool:
    st = c.status()
    return st.capacity == capacity and st.in_flight == 0 and all(w.in_flight == 0 for w in st.worker_list)


def test_submit_and_cancel_rounds_leave_every_slot_free(
    manager: Manager, key_file: str, python: str, tmp_path: Path, procs: List[Proc]
) -> None:
    proc = start_worker(python, tmp_path, manager, key_file, procs)
    with Client(manager.addr, key_file) as c:
        handles = []
        for i in range(200):
            h = c.submit("a_nap" if i % 2 else "s_nap", 30)
            h.cancel()
            handles.append(h)
        for h in handles:
            with pytest.raises(TaskFailed, match="cancelled by the client"):
                h.result(WAIT)
        eventually(lambda: idle(c, 4), what="every slot free after 200 submit-and-cancel rounds")
        # The cancel reaching the worker in the same read as the assign,
        # before the task's first step, for sure: while `hog` holds the loop.
        for r in range(10):
            mark = tmp_path / f"hog{r}"
            held = c.submit("hog", [str(mark), 150])
            eventually(mark.exists, what="hog started")
            cancelled = []
            for _ in range(3):
                h = c.submit("a_nap", 30)
                h.cancel()
                cancelled.append(h)
            assert held.result(WAIT) == 150
            for h in cancelled:
                with pytest.raises(TaskFailed, match="cancelled by the client"):
                    h.result(WAIT)
        eventually(lambda: idle(c, 4), what="every slot free after cancels that beat the first step")
        assert c.run("a_nap", 0.01) == 0.01
        assert c.run("s_nap", 0.01) == 0.01
    # Nothing runs: the drain has nothing to wait for (stop_timeout is 30 s).
    start = time.monotonic()
    proc.p.send_signal(signal.SIGTERM)
    assert proc.p.wait(WAIT) == 0
    assert time.monotonic() - start < 15, "SIGTERM waited for runs that should be gone"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def read_pid(path: Path) -> int:
    eventually(path.exists, what=f"{path} written by the process task")
    return int(path.read_text())


def test_process_tasks_are_killed_on_timeout_and_cancel(
    manager: Manager, key_file: str, python: str, tmp_path: Path, procs: List[Proc]
) -> None:
    proc = start_worker(python, tmp_path, manager, key_file, procs, capacity=1)
    with Client(manager.addr, key_file) as c:
        first = c.run("square", 7)
        assert first["square"] == 49
        assert first["pid"] != proc.p.pid

        # A CPU loop past its timeout: its process is killed, the slot frees.
        with pytest.raises(TaskFailed) as e:
            c.run("spin", str(tmp_path / "spin1"), timeout=0.5)
        assert e.value.error == "task spin timed out after 500ms"
        pid = read_pid(tmp_path / "spin1")
        eventually(lambda: not pid_alive(pid), what="the timed-out process is gone")
        after = c.run("square", 3)
        assert after["square"] == 9 and after["pid"] != pid
        eventually(lambda: idle(c, 1))

        # The same for a cancel.
        h = c.submit("spin", str(tmp_path / "spin2"))
        pid = read_pid(tmp_path / "spin2")
        h.cancel()
        with pytest.raises(TaskFailed, match="cancelled by the client"):
            h.result(WAIT)
        eventually(lambda: not pid_alive(pid), what="the cancelled process is gone")
        assert c.run("square", 4)["square"] == 16

        with pytest.raises(TaskFailed) as e:
            c.run("p_boom", 5)
        assert e.value.error == "ValueError: bad value 5"
        eventually(lambda: idle(c, 1))
    proc.p.send_signal(signal.SIGTERM)
    assert proc.p.wait(WAIT) == 0


def test_process_tasks_must_be_importable() -> None:
    from argon_tasks import Worker

    w = Worker("127.0.0.1:1", capacity=1)

    def local(x: Any) -> Any:
        return x

    with pytest.raises(ValueError, match="module level"):
        w.add_task("local", local, process=True)

    async def coro(x: Any) -> Any:
        return x

    with pytest.raises(ValueError, match="async def"):
        w.add_task("coro", coro, process=True)


def test_wait_for_timeout_leaves_no_unretrieved_exception(
    manager: Manager, key_file: str, python: str, tmp_path: Path, procs: List[Proc]
) -> None:
    start_worker(python, tmp_path, manager, key_file, procs)
    reported: List[Dict[str, Any]] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _, ctx: reported.append(ctx))
        async with AsyncClient(manager.addr, key_file) as c:
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(c.run("a_nap", 30), 0.3)
            h = await c.submit("a_nap", 30)
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(h, 0.3)
            deadline = time.monotonic() + WAIT
            while not h.done() or (await c.status()).in_flight:
                assert time.monotonic() < deadline, "the cancelled tasks were not answered"
                await asyncio.sleep(0.02)
            del h
            # A handle cancelled and never awaited is no error.
            dropped = await c.submit("a_nap", 30)
            dropped.cancel()
            while not dropped.done():
                assert time.monotonic() < deadline, "the cancelled task was not answered"
                await asyncio.sleep(0.02)
            del dropped
            # Handles never awaited when the client closes are no error either.
            kept = [await c.submit("a_nap", 30) for _ in range(3)]
        del kept
        gc.collect()
        await asyncio.sleep(0)

    asyncio.run(main())
    gc.collect()
    assert reported == []


def test_closing_clients_is_not_a_warning_in_the_managers_log(
    manager: Manager, key_file: str, python: str, tmp_path: Path, procs: List[Proc]
) -> None:
    worker = start_worker(python, tmp_path, manager, key_file, procs)
    for _ in range(5):
        # Results still on their way when the client closes.
        with Client(manager.addr, key_file) as c:
            for i, _v in enumerate(c.map("a_nap", [0] * 3000, concurrency=2000)):
                if i == 10:
                    break

        async def burst() -> None:
            async with AsyncClient(manager.addr, key_file) as ac:
                handles = [await ac.submit("a_nap", 0) for _ in range(2000)]
                await handles[0]

        asyncio.run(burst())
    with Client(manager.addr, key_file) as c:
        eventually(lambda: c.status().in_flight == 0)
        # A worker that drains and leaves closes cleanly too.
        assert worker.stop() == 0
        eventually(lambda: c.status().workers == 0)
    manager.proc.stop()
    lines = manager.proc.seen + manager.proc.rest()
    warned = [line for line in lines if "WARN" in line and ("[client" in line or "[worker" in line)]
    assert warned == []


def test_process_pool_bounds_results_and_kills() -> None:
    import threading

    from argon_tasks._procs import Job, ProcessPool

    pool = ProcessPool(1, max_result=1000)
    try:
        assert pool.call(Job(), ("builtins", "bytes"), "zeros", 10) == ("done", b"\0" * 10)
        kind, text = pool.call(Job(), ("builtins", "bytes"), "zeros", 5000)
        assert kind == "failed" and "task zeros returned a result larger than 1000 bytes pickled" in text
        assert pool.call(Job(), ("builtins", "len"), "len", [1, 2]) == ("done", 2)
        kind, text = pool.call(Job(), ("builtins", "int"), "int", "x")
        assert kind == "failed" and text.startswith("ValueError: invalid literal")
        kind, text = pool.call(Job(), ("no_such_module_here", "f"), "nothing", 1)
        assert kind == "failed" and "ModuleNotFoundError" in text

        job = Job()
        out: List[Any] = []
        t = threading.Thread(target=lambda: out.append(pool.call(job, ("time", "sleep"), "sleep", 30)))
        t.start()
        eventually(lambda: job.proc is not None, what="the job to reach a process")
        pool.kill(job)
        t.join(WAIT)
        assert not t.is_alive()
        assert out[0][0] == "failed" and "ended (exit code -9)" in out[0][1]
        stopped = Job()
        pool.kill(stopped)
        assert pool.call(stopped, ("builtins", "len"), "len", []) == ("failed", "stopped before it started")
    finally:
        pool.shutdown()
