"""Python workers against a real manager: served to Python clients and to
the Rust CLI, with timeouts, cancels, slots, reconnects and stops."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import textwrap
import threading
import time
from pathlib import Path
from typing import Any, Callable, List

import pytest

from argon_tasks import Client, ConnectionLost, RegistrationRefused, TaskFailed, Worker, current_run

from conftest import WAIT, Manager, Proc, ThreadWorker, eventually

Serve = Callable[..., ThreadWorker]


def make_worker(mgr: Manager, key_file: str, capacity: int = 4, **kw: Any) -> Worker:
    return Worker(mgr.addr, key_file, capacity, reconnect_min=0.05, reconnect_max=0.5, **kw)


def test_python_worker_serves_sync_and_async_functions(manager: Manager, key_file: str, serve: Serve) -> None:
    w = make_worker(manager, key_file)

    @w.task("py_upper")
    def upper(text: str) -> str:
        return text.upper()

    @w.task()
    async def add(args: List[int]) -> int:
        await asyncio.sleep(0.01)
        return sum(args)

    @w.task("inline_len", thread=False)
    def length(value: Any) -> int:
        return len(value)

    @w.task("boom")
    def boom(args: Any) -> None:
        raise ValueError(f"bad input {args!r}\nsecond line")

    serve(w)
    with Client(manager.addr, key_file) as c:
        assert c.run("py_upper", "abc") == "ABC"
        assert c.run("add", [1, 2, 39]) == 42
        assert c.run("inline_len", [1, 2, 3]) == 3
        with pytest.raises(TaskFailed) as e:
            c.run("boom", 7)
        assert e.value.error == "ValueError: bad input 7 second line"
        st = c.status()
        assert st.workers == 1
        assert set(st.worker_list[0].tasks) == {"py_upper", "add", "inline_len", "boom"}
        assert st.worker_list[0].id == w.worker_id


def test_slots_bound_concurrent_runs(manager: Manager, key_file: str, serve: Serve) -> None:
    w = make_worker(manager, key_file, capacity=3)
    lock = threading.Lock()
    now = {"running": 0, "most": 0}

    @w.task("hold")
    def hold(ms: int) -> int:
        with lock:
            now["running"] += 1
            now["most"] = max(now["most"], now["running"])
        time.sleep(ms / 1000)
        with lock:
            now["running"] -= 1
        return ms

    serve(w)
    with Client(manager.addr, key_file) as c:
        # Long enough that the first three overlap even on a loaded machine.
        assert list(c.map("hold", [150] * 9, concurrency=9)) == [150] * 9
    assert now["most"] == 3


def test_python_worker_times_out_runs(manager: Manager, key_file: str, serve: Serve) -> None:
    w = make_worker(manager, key_file)
    saw_cancel = threading.Event()

    @w.task("nap")
    async def nap(seconds: float) -> float:
        await asyncio.sleep(seconds)
        return seconds

    @w.task("poll")
    def poll(seconds: float) -> str:
        run = current_run()
        assert run is not None and run.deadline is not None
        if run.cancelled.wait(seconds):
            saw_cancel.set()
            return "stopped early"
        return "slept"

    serve(w)
    with Client(manager.addr, key_file) as c:
        with pytest.raises(TaskFailed) as e:
            c.run("nap", 30, timeout=0.2)
        assert e.value.error == "task nap timed out after 200ms"
        with pytest.raises(TaskFailed) as e:
            c.run("poll", 30, timeout=0.15)
        assert e.value.error == "task poll timed out after 150ms"
        assert saw_cancel.is_set()
        assert c.run("nap", 0.01) == 0.01


def test_client_disconnect_cancels_a_running_python_task(manager: Manager, key_file: str, serve: Serve) -> None:
    w = make_worker(manager, key_file)
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
    c = Client(manager.addr, key_file)
    handle = c.submit("forever")
    assert started.wait(WAIT)
    c.close()
    assert cancelled.wait(WAIT), "the manager's cancel did not reach the running task"
    with pytest.raises(Exception):
        handle.result(0)
    with Client(manager.addr, key_file) as c2:
        # The worker's `finished` frees the slot; the client is gone, so
        # nobody is answered.
        eventually(lambda: c2.status().in_flight == 0)


def test_explicit_cancel_reaches_the_worker(manager: Manager, key_file: str, serve: Serve) -> None:
    w = make_worker(manager, key_file)
    started = threading.Event()

    @w.task("forever")
    async def forever(_: Any) -> None:
        started.set()
        await asyncio.sleep(60)

    serve(w)
    with Client(manager.addr, key_file) as c:
        h = c.submit("forever")
        assert started.wait(WAIT)
        h.cancel()
        with pytest.raises(TaskFailed, match="cancelled by the client"):
            h.result(WAIT)


def test_results_that_cannot_be_sent_fail_cleanly(manager: Manager, key_file: str, serve: Serve) -> None:
    w = make_worker(manager, key_file)

    @w.task("deep")
    def deep(n: int) -> Any:
        v: Any = 0
        for _ in range(n):
            v = [v]
        return v

    @w.task("weird")
    def weird(_: Any) -> Any:
        return {1, 2}

    @w.task("big")
    def big(n: int) -> str:
        return "z" * n

    serve(w)
    with Client(manager.addr, key_file) as c:
        assert c.run("deep", 120) is not None
        with pytest.raises(TaskFailed, match="result nested deeper than 120 levels"):
            c.run("deep", 121)
        with pytest.raises(TaskFailed, match="returned a result that cannot be sent"):
            c.run("weird")
        with pytest.raises(TaskFailed, match=r"result of \d+ bytes exceeds the frame limit of 16777216 bytes"):
            c.run("big", 17 * 1024 * 1024)
        assert c.run("big", 3) == "zzz"
    with Client(manager.addr, key_file, max_frame=2048) as small:
        with pytest.raises(ConnectionLost, match=r"frame of \d+ bytes exceeds the limit of 2048 bytes"):
            small.run("big", 4000)
        assert small.run("big", 5) == "zzzzz"


def test_worker_reconnects_after_manager_restart(
    start_manager: Callable[..., Manager], key_file: str, serve: Serve
) -> None:
    mgr = start_manager()
    w = make_worker(mgr, key_file)

    @w.task("py_echo")
    def echo(x: Any) -> Any:
        return x

    serve(w)
    with Client(mgr.addr, key_file) as c:
        assert c.run("py_echo", 1) == 1
    mgr.proc.stop(signal.SIGKILL)
    again = start_manager(port=mgr.port)
    assert w.wait_ready(WAIT, registrations=2)
    with Client(again.addr, key_file) as c:
        assert c.run("py_echo", "after restart") == "after restart"


def test_run_going_across_a_restart_is_reported_in_register(
    start_manager: Callable[..., Manager], key_file: str, serve: Serve
) -> None:
    mgr = start_manager()
    w = make_worker(mgr, key_file, capacity=1)
    started = threading.Event()
    release = threading.Event()

    @w.task("block")
    def block(_: Any) -> str:
        started.set()
        release.wait(WAIT)
        return "done"

    serve(w)
    c = Client(mgr.addr, key_file)
    c.submit("block")
    assert started.wait(WAIT)
    mgr.proc.stop(signal.SIGKILL)
    c.close()
    again = start_manager(port=mgr.port)
    assert w.wait_ready(WAIT, registrations=2)
    with Client(again.addr, key_file) as c2:
        st = c2.status()
        # The slot that still runs the old task is busy until it ends.
        assert st.in_flight == 1
        release.set()
        started.clear()
        assert c2.run("block", None) == "done"


def write_module(tmp_path: Path) -> Path:
    (tmp_path / "pytasks.py").write_text(
        textwrap.dedent(
            """
            import time
            from argon_tasks import Worker

            worker = Worker(capacity=2)

            @worker.task("py_upper")
            def upper(text):
                return text.upper()

            @worker.task("py_slow")
            def slow(ms):
                time.sleep(ms / 1000)
                return ms
            """
        )
    )
    return tmp_path


def cli_worker(python: str, cwd: Path, mgr: Manager, key: str, procs: List[Proc], *extra: str) -> Proc:
    env = dict(os.environ, ARGON_MGR=mgr.addr)
    proc = Proc([python, "-m", "argon_tasks", "worker", "pytasks:worker", "--key", key, *extra], env=env, cwd=str(cwd))
    procs.append(proc)
    return proc


def test_cli_worker_serves_the_rust_cli(
    argon: str, manager: Manager, key_file: str, python: str, tmp_path: Path, procs: List[Proc]
) -> None:
    proc = cli_worker(python, write_module(tmp_path), manager, key_file, procs)
    proc.wait_line(r"registered with the manager at \S+ as worker \d+: 2 slot\(s\), tasks py_upper, py_slow")
    out = subprocess.run(
        [argon, "submit", "--mgr", manager.addr, "--key", key_file, "py_upper", '"from rust"'],
        capture_output=True,
        text=True,
        timeout=WAIT,
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == "FROM RUST"
    bad = subprocess.run(
        [argon, "submit", "--mgr", manager.addr, "--key", key_file, "py_upper", "[1]"],
        capture_output=True,
        text=True,
        timeout=WAIT,
    )
    assert bad.returncode != 0 and "AttributeError" in bad.stderr


def test_cli_worker_drains_on_sigterm(manager: Manager, key_file: str, python: str, tmp_path: Path, procs: List[Proc]) -> None:
    proc = cli_worker(python, write_module(tmp_path), manager, key_file, procs)
    proc.wait_line(r"registered with the manager")
    with Client(manager.addr, key_file) as c:
        h = c.submit("py_slow", 400)
        eventually(lambda: c.status().in_flight == 1)
        proc.p.send_signal(signal.SIGTERM)
        assert h.result(WAIT) == 400
        assert proc.p.wait(WAIT) == 0
        eventually(lambda: c.status().workers == 0)


def test_cli_worker_with_wrong_key_exits_77(manager: Manager, python: str, tmp_path: Path, procs: List[Proc]) -> None:
    other = tmp_path / "other-key"
    other.write_text("some other key, long enough to be a key\n")
    other.chmod(0o600)
    proc = cli_worker(python, write_module(tmp_path), manager, str(other), procs)
    assert proc.p.wait(WAIT) == 77
    proc.wait_line(r"holds another key")


def test_cli_worker_usage_errors(python: str, tmp_path: Path, key_file: str) -> None:
    write_module(tmp_path)
    for target in ("pytasks", "pytasks:nothing", "pytasks:time", "no_such_module:w"):
        out = subprocess.run(
            [python, "-m", "argon_tasks", "worker", target, "--key", key_file],
            capture_output=True,
            text=True,
            timeout=WAIT,
            cwd=str(tmp_path),
        )
        assert out.returncode == 2, (target, out.stderr)
        assert "cannot load" in out.stderr


def test_worker_env_fallbacks(manager: Manager, key_file: str, monkeypatch: pytest.MonkeyPatch, serve: Serve) -> None:
    monkeypatch.setenv("ARGON_MGR", manager.addr)
    monkeypatch.setenv("ARGON_KEY", key_file)
    w = Worker(capacity=1)
    w.add_task("env_echo", lambda x: x)
    serve(w)
    with Client() as c:
        assert c.run("env_echo", {"k": "v"}) == {"k": "v"}


def test_a_worker_refused_for_good_stops(manager: Manager, key_file: str) -> None:
    # A frame limit below the manager's is refused `permanent`: no retry helps.
    w = make_worker(manager, key_file, max_frame=1024)
    w.add_task("small", lambda x: x)
    with pytest.raises(RegistrationRefused, match="security.max_frame_bytes"):
        asyncio.run(asyncio.wait_for(w.serve(), WAIT))


def test_task_names_are_checked() -> None:
    w = Worker("127.0.0.1:1", capacity=1)
    for bad in ("", "has space", "@eval", "x" * 129):
        with pytest.raises(ValueError):
            w.add_task(bad, lambda x: x)


def test_map_passes_retries_to_every_task(manager: Manager, key_file: str, serve: Serve) -> None:
    w = make_worker(manager, key_file)
    seen: dict[int, int] = {}
    lock = threading.Lock()

    @w.task("flaky")
    def flaky(n: int) -> int:
        with lock:
            seen[n] = seen.get(n, 0) + 1
            first = seen[n] == 1
        if first:
            raise RuntimeError(f"first run of {n} fails")
        return n * 10

    serve(w)
    with Client(manager.addr, key_file) as c:
        failed = list(c.map("flaky", [1, 2, 3], return_exceptions=True))
        assert all(isinstance(r, TaskFailed) for r in failed), failed
        assert list(c.map("flaky", [4, 5, 6], retries=1)) == [40, 50, 60]

    async def through_async() -> List[Any]:
        from argon_tasks import AsyncClient

        async with AsyncClient(manager.addr, key_file) as ac:
            return [r async for r in ac.map("flaky", [7, 8], retries=1)]

    assert asyncio.run(through_async()) == [70, 80]
    assert all(seen[n] == 2 for n in (4, 5, 6, 7, 8)), seen
