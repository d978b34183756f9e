"""Background jobs against a real manager: detached tasks enqueued by one
client (or process) and read or cancelled by id from another, in the sync
and the async client, and an App shared by producer and worker."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Callable, List

import pytest

from argon_tasks import App, AsyncClient, Client, NotReady, TaskFailed, UnknownTask, Worker

from conftest import WAIT, Manager, Proc, ThreadWorker, eventually

Serve = Callable[..., ThreadWorker]


def nap_worker(mgr: Manager, key_file: str, capacity: int = 4) -> Worker:
    w = Worker(mgr.addr, key_file, capacity, reconnect_min=0.05, reconnect_max=0.5)

    @w.task("nap")
    async def nap(seconds: float) -> float:
        await asyncio.sleep(seconds)
        return seconds

    @w.task("fail")
    def fail(n: int) -> None:
        raise ValueError(f"bad value {n}")

    return w


def test_enqueue_outlives_the_client_and_is_read_by_id(manager: Manager, key_file: str, serve: Serve) -> None:
    serve(nap_worker(manager, key_file))
    with Client(manager.addr, key_file) as c:
        slow = c.enqueue("nap", 0.5)
        quick = c.enqueue("nap", 0)
        failing = c.enqueue("fail", 3)
        assert isinstance(slow, int) and len({slow, quick, failing}) == 3
    # Closing the client cancelled nothing: another client reads them.
    with Client(manager.addr, key_file) as c:
        assert c.result(slow) == 0.5
        assert c.result(quick, timeout=WAIT) == 0
        with pytest.raises(TaskFailed) as e:
            c.result(failing)
        assert e.value.error == "ValueError: bad value 3"
        assert e.value.task_id == failing
        # An outcome is read any number of times.
        assert c.result(slow, wait=False) == 0.5


def test_result_not_ready_unknown_and_cancel(manager: Manager, key_file: str, serve: Serve) -> None:
    serve(nap_worker(manager, key_file))
    with Client(manager.addr, key_file) as c:
        tid = c.enqueue("nap", 60)
        with pytest.raises(NotReady) as nr:
            c.result(tid, wait=False)
        assert nr.value.state in ("queued", "running") and nr.value.task_id == tid
        with pytest.raises(NotReady) as nr:
            c.result(tid, timeout=0.2)
        assert nr.value.state is None
        # NotReady is a TimeoutError too.
        with pytest.raises(TimeoutError):
            c.result(tid, timeout=0.05)
        assert c.cancel(tid) == "cancelled"
        with pytest.raises(TaskFailed, match="cancelled by the client"):
            c.result(tid)
        assert c.cancel(tid) == "finished"
        unknown = tid ^ (1 << 40)
        assert c.cancel(unknown) == "unknown"
        with pytest.raises(UnknownTask) as un:
            c.result(unknown)
        assert un.value.task_id == unknown
        for bad in (-1, 1 << 64):
            with pytest.raises(ValueError):
                c.result(bad)
        with pytest.raises(TypeError):
            c.result("12")  # type: ignore[arg-type]
        with pytest.raises(TaskFailed, match="no worker provides task nobody"):
            c.enqueue("nobody", 1)
        # The client still works after the timed-out waits.
        assert c.run("nap", 0) == 0


def test_async_enqueue_result_and_cancel(manager: Manager, key_file: str, serve: Serve) -> None:
    serve(nap_worker(manager, key_file))

    async def produce() -> List[int]:
        async with AsyncClient(manager.addr, key_file) as c:
            return [await c.enqueue("nap", 0.01 * i) for i in range(5)] + [await c.enqueue("nap", 60)]

    async def consume(ids: List[int]) -> None:
        async with AsyncClient(manager.addr, key_file) as c:
            *quick, slow = ids
            assert [await c.result(t) for t in quick] == [0.01 * i for i in range(5)]
            with pytest.raises(NotReady):
                await c.result(slow, wait=False)
            with pytest.raises(NotReady):
                await c.result(slow, timeout=0.1)
            assert await c.cancel(slow) == "cancelled"
            with pytest.raises(TaskFailed, match="cancelled by the client"):
                await c.result(slow)
            with pytest.raises(UnknownTask):
                await c.result(slow ^ (1 << 40))
            h = await c.submit("nap", 0)
            await h
            assert h.id == h.task_id

    ids = asyncio.run(produce())
    asyncio.run(consume(ids))


PRODUCERS = {
    "client": """
        from argon_tasks import Client
        with Client({mgr!r}, {key!r}) as c:
            ids = [c.enqueue("echo", i) for i in range({n})]
        """,
    "app": """
        from argon_tasks import App
        app = App({mgr!r}, {key!r})

        @app.task()
        def echo(x):
            return x

        ids = [echo.delay(i) for i in range({n})]
        """,
}


@pytest.mark.parametrize("producer", sorted(PRODUCERS))
def test_many_detached_tasks_collected_by_another_process(
    producer: str,
    start_manager: Callable[..., Manager],
    key_file: str,
    start_rust_worker: Callable[..., Proc],
    python: str,
    tmp_path: Path,
) -> None:
    mgr = start_manager(queue_factor=4000)
    start_rust_worker(mgr, capacity=8)
    n = 10_000
    ids_file = tmp_path / "ids"
    produce = textwrap.dedent(PRODUCERS[producer]).format(mgr=mgr.addr, key=key_file, n=n) + textwrap.dedent(
        f"""
        open({str(ids_file)!r}, "w").write(" ".join(map(str, ids)))
        """
    )
    collect = textwrap.dedent(
        f"""
        from argon_tasks import Client
        ids = [int(x) for x in open({str(ids_file)!r}).read().split()]
        with Client({mgr.addr!r}, {key_file!r}) as c:
            values = [c.result(t, timeout={WAIT}) for t in ids]
        assert values == list(range({n})), "results differ"
        print("collected", len(values))
        """
    )
    for code in (produce, collect):
        out = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"collected {n}"


APP_MODULE = """
from argon_tasks import App

app = App(capacity=4)

@app.task()
def double(n):
    return 2 * n

@app.task("squares", process=True, priority="high")
def squares(n):
    return [i * i for i in range(n)]
"""


def test_app_is_shared_by_producer_and_cli_worker(
    manager: Manager, key_file: str, python: str, tmp_path: Path, procs: List[Proc], monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "apptasks.py").write_text(textwrap.dedent(APP_MODULE))
    env = dict(os.environ, ARGON_MGR=manager.addr, ARGON_KEY=key_file)
    proc = Proc([python, "-m", "argon_tasks", "worker", "apptasks:app"], env=env, cwd=str(tmp_path))
    procs.append(proc)
    proc.wait_line(r"registered with the manager at \S+ as worker \d+: 4 slot\(s\), tasks double, squares")

    monkeypatch.setenv("ARGON_MGR", manager.addr)
    monkeypatch.setenv("ARGON_KEY", key_file)
    monkeypatch.syspath_prepend(str(tmp_path))
    import apptasks

    try:
        assert apptasks.double(4) == 8  # a plain call runs here
        ids = [apptasks.double.delay(i) for i in range(100)]
        assert [apptasks.app.result(t) for t in ids] == [2 * i for i in range(100)]
        fut = apptasks.squares.submit(4)
        assert fut.result(WAIT) == [0, 1, 4, 9]
        assert apptasks.squares.run(3, timeout=WAIT) == [0, 1, 4]
        with pytest.raises(TypeError, match="unexpected option"):
            apptasks.double.delay(1, priorty="high")
        assert apptasks.app.cancel(apptasks.double.delay(1)) in ("cancelled", "finished")
    finally:
        apptasks.app.close()
        sys.modules.pop("apptasks", None)


def test_app_registry_checks() -> None:
    app = App("127.0.0.1:1", b"some key, long enough to be a key")

    @app.task()
    def one(x: Any) -> Any:
        return x

    with pytest.raises(ValueError, match="registered twice"):
        app.task("one")(lambda x: x)
    with pytest.raises(TypeError, match="unexpected option"):
        app.task(prio="high")
    w = app.worker(stop_timeout=1)
    assert w.tasks == ("one",)
    assert App().tasks == {}
    with pytest.raises(ValueError, match="no tasks"):
        App().worker()


def test_a_wait_by_id_is_asked_again_across_a_manager_crash(
    argon: str, key_file: str, procs: List[Proc], start_rust_worker: Callable[..., Proc], tmp_path: Path
) -> None:
    from test_reattach import Durable

    d = Durable(argon, key_file, procs, tmp_path)
    start_rust_worker(d.current, 2)
    with Client(d.current.addr, key_file, retry_for=60) as c:
        # A manager with a task store tells an attached task its id too
        # (before its reply, unless the task ends at once).
        attached = c.submit("sleep", [300, "y"])
        eventually(lambda: attached.id is not None, what="the attached task's id")
        assert attached.id == attached.task_id
        assert attached.result(WAIT) == [300, "y"]
        tid = c.enqueue("sleep", [3000, "x"])
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            waiting = pool.submit(c.result, tid, timeout=WAIT)
            eventually(lambda: c._core.in_flight == 1, what="the wait to be sent")
            d.crash()
            d.start(d.current.port)
            assert waiting.result(WAIT) == [3000, "x"]
