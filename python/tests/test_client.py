"""The blocking Client against a real manager and Rust workers."""

from __future__ import annotations

import signal
import threading
from typing import Any, Callable, List

import pytest

from argon_tasks import (
    AuthFailed,
    Client,
    ConnectError,
    ConnectionLost,
    Denied,
    ExtType,
    FrameTooLarge,
    Overloaded,
    TaskFailed,
)

from conftest import WAIT, Manager, Proc

VALUES: List[Any] = [
    None,
    True,
    0,
    -1,
    2**64 - 1,
    -(2**63),
    1.5,
    "héllo wörld ✓",
    b"\x00\xff",
    [1, [2, [3, []]]],
    {"a": {"b": [None, False]}, 7: "integer key"},
    ExtType(5, b"xy"),
]


def test_echo_round_trip_keeps_values(manager: Manager, rust_worker: Proc, key_file: str) -> None:
    with Client(manager.addr, key_file) as c:
        for v in VALUES:
            assert c.run("echo", v) == v
        handles = [c.submit("echo", [i, str(i)]) for i in range(50)]
        assert [h.result(WAIT) for h in handles] == [[i, str(i)] for i in range(50)]


def test_sleep_and_options(manager: Manager, rust_worker: Proc, key_file: str) -> None:
    with Client(manager.addr, key_file) as c:
        assert c.run("sleep", 30, priority="high", timeout=5, attempts=2) == 30
        assert c.run("sleep", [20], priority="low") == [20]


def test_task_errors_raise_task_failed(manager: Manager, rust_worker: Proc, key_file: str) -> None:
    with Client(manager.addr, key_file) as c:
        with pytest.raises(TaskFailed) as e:
            c.run("sleep", "soon")
        assert "sleep takes a number of milliseconds" in e.value.error
        assert e.value.task == "sleep"
        with pytest.raises(TaskFailed, match="no worker provides task nothing_here"):
            c.run("nothing_here", 1)
        assert c.run("echo", "still connected") == "still connected"


def test_timeout_stops_the_task(manager: Manager, rust_worker: Proc, key_file: str) -> None:
    with Client(manager.addr, key_file) as c:
        with pytest.raises(TaskFailed) as e:
            c.run("sleep", 10_000, timeout=0.2)
        assert e.value.error == "task sleep timed out after 200ms"


def test_map_keeps_input_order(manager: Manager, rust_worker: Proc, key_file: str) -> None:
    pulled = []

    def items() -> Any:
        for i in range(2000):
            pulled.append(i)
            yield i

    with Client(manager.addr, key_file) as c:
        out = []
        for i, r in enumerate(c.map("echo", items(), concurrency=50)):
            # The input is read only as results are taken.
            assert len(pulled) <= i + 50
            out.append(r)
        assert out == list(range(2000))
        mixed = list(c.map("sleep", [5, "x", 1], return_exceptions=True))
        assert mixed[0] == 5 and mixed[2] == 1 and isinstance(mixed[1], TaskFailed)
        with pytest.raises(TaskFailed):
            list(c.map("sleep", [5, "x", 1]))


def test_deny_without_retry_raises_denied(start_manager: Callable[..., Manager], start_rust_worker: Callable[..., Proc], key_file: str) -> None:
    mgr = start_manager(queue_factor=1)
    start_rust_worker(mgr, capacity=1)
    with Client(mgr.addr, key_file) as c:
        running = c.submit("sleep", 10_000, retry=False)
        queued = c.submit("sleep", 10_000, retry=False)
        with pytest.raises(Denied) as e:
            c.run("sleep", 1, retry=False)
        assert e.value.reason == "queue full"
        assert 0.01 <= e.value.retry_after <= 60
        with Client(mgr.addr, key_file, retry_for=0.3) as impatient:
            with pytest.raises(Overloaded):
                impatient.run("sleep", 1)
        running.cancel()
        queued.cancel()
        for h in (running, queued):
            with pytest.raises(TaskFailed, match="cancelled by the client"):
                h.result(WAIT)


def test_denied_tasks_are_retried_until_room(start_manager: Callable[..., Manager], start_rust_worker: Callable[..., Proc], key_file: str) -> None:
    mgr = start_manager(queue_factor=1)
    start_rust_worker(mgr, capacity=1)
    with Client(mgr.addr, key_file) as c:
        results = list(c.map("sleep", [40] * 8, concurrency=8))
        assert results == [40] * 8
        assert c.status().denied > 0


def test_ping_and_status(manager: Manager, rust_worker: Proc, key_file: str) -> None:
    with Client(manager.addr, key_file) as c:
        assert 0 < c.ping() < WAIT
        c.run("echo", 1)
        st = c.status()
        assert st.workers == 1 and st.capacity == 4
        assert st.completed >= 1
        assert set(st.worker_list[0].tasks) >= {"echo", "sleep"}
        assert st.worker_list_total == 1 and not st.worker_list_truncated


def test_wrong_key_is_auth_failed(manager: Manager, tmp_path: Any) -> None:
    other = tmp_path / "other"
    other.write_text("a different key that is long enough to use\n")
    other.chmod(0o600)
    with Client(manager.addr, str(other)) as c:
        with pytest.raises(AuthFailed, match="holds another key"):
            c.run("echo", 1)
        with pytest.raises(AuthFailed):
            c.connect()


def test_no_manager_is_connect_error(key_file: str) -> None:
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    with Client(f"127.0.0.1:{port}", key_file) as c:
        with pytest.raises(ConnectError, match="cannot connect"):
            c.run("echo", 1)


def test_oversized_submit_is_refused_locally(manager: Manager, rust_worker: Proc, key_file: str) -> None:
    with Client(manager.addr, key_file, max_frame=64 * 1024) as c:
        with pytest.raises(FrameTooLarge):
            c.run("echo", b"x" * 70_000)
        assert c.run("echo", "fine") == "fine"


def test_lost_connection_fails_pending_calls_and_reconnects(
    start_manager: Callable[..., Manager], start_rust_worker: Callable[..., Proc], key_file: str
) -> None:
    mgr = start_manager()
    worker = start_rust_worker(mgr)
    with Client(mgr.addr, key_file) as c:
        pending = c.submit("sleep", 10_000)
        assert c.ping() > 0
        mgr.proc.stop(signal.SIGKILL)
        # It would otherwise finish its 10 s sleep before it stops.
        worker.stop(signal.SIGKILL)
        with pytest.raises(ConnectionLost, match="connection to the manager lost"):
            pending.result(WAIT)
        with pytest.raises(ConnectError):
            c.run("echo", 1)
        again = start_manager(port=mgr.port)
        start_rust_worker(again)
        assert c.run("echo", "back") == "back"


def test_many_threads_share_one_client(manager: Manager, rust_worker: Proc, key_file: str) -> None:
    errors: List[BaseException] = []
    with Client(manager.addr, key_file) as c:

        def use(n: int) -> None:
            try:
                for i in range(50):
                    assert c.run("echo", [n, i]) == [n, i]
            except BaseException as e:
                errors.append(e)

        threads = [threading.Thread(target=use, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(WAIT)
        assert not errors and not any(t.is_alive() for t in threads)


def test_status_has_every_field_of_the_cli_json(argon: str, manager: Manager, rust_worker: Proc, key_file: str) -> None:
    import dataclasses
    import json
    import subprocess

    out = subprocess.run(
        [argon, "status", "--mgr", manager.addr, "--key", key_file, "--json"],
        capture_output=True,
        text=True,
        timeout=WAIT,
    )
    assert out.returncode == 0, out.stderr
    cli = json.loads(out.stdout)
    with Client(manager.addr, key_file) as c:
        st = c.status()
    assert {f.name for f in dataclasses.fields(st)} == set(cli)
    assert {f.name for f in dataclasses.fields(st.worker_list[0])} == set(cli["worker_list"][0])
    for name in ("workers", "capacity", "queue_limit", "retrying", "awaiting_provider", "worker_list_total"):
        assert getattr(st, name) == cli[name], name
