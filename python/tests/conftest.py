"""Fixtures that run the real ``argon`` binary: managers, Rust workers, key
files, and Python workers on background threads.

``ARGON_BIN`` names the binary (default: ``target/debug/argon`` of this
repository). Every process is stopped by its own handle at the end of its
test, and every wait has a bound.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Callable, Iterator, List, Optional

import pytest

from argon_tasks import Worker

REPO = Path(__file__).resolve().parents[2]
WAIT = 20.0


def argon_bin() -> str:
    path = os.environ.get("ARGON_BIN") or str(REPO / "target" / "debug" / "argon")
    if not os.access(path, os.X_OK):
        pytest.fail(f"no argon binary at {path}: run `cargo build` or set ARGON_BIN", pytrace=False)
    return path


def eventually(cond: Callable[[], bool], timeout: float = WAIT, what: str = "condition") -> None:
    """Polls ``cond`` (for state that has no event to wait on) until it
    holds; fails after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not hold within {timeout} s")
        time.sleep(0.02)


class Proc:
    """A child process whose output lines are collected by reader threads."""

    def __init__(self, args: List[str], *, env: Optional[dict] = None, cwd: Optional[str] = None) -> None:
        self.args = args
        self.p = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=cwd,
        )
        self.lines: "queue.Queue[tuple[str, str]]" = queue.Queue()
        self.seen: List[str] = []
        self.readers = [
            threading.Thread(target=self._read, args=(name, stream), daemon=True)
            for name, stream in (("out", self.p.stdout), ("err", self.p.stderr))
        ]
        for t in self.readers:
            t.start()

    def _read(self, name: str, stream: Optional[IO[str]]) -> None:
        assert stream is not None
        with stream:
            for line in stream:
                self.lines.put((name, line.rstrip("\n")))

    def wait_line(self, pattern: str, timeout: float = WAIT, stream: Optional[str] = None) -> "re.Match[str]":
        """The first new line (of ``stream``, or either) matching ``pattern``."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{self.args[:2]}: no line matching {pattern!r} in {timeout} s; saw {self.seen[-20:]}")
            try:
                name, line = self.lines.get(timeout=left)
            except queue.Empty:
                continue
            self.seen.append(f"{name}: {line}")
            m = rx.search(line)
            if m and (stream is None or stream == name):
                return m

    def rest(self, timeout: float = WAIT) -> List[str]:
        """After the process ended: every line not yet taken by
        :meth:`wait_line`, once both streams are read to their end."""
        for t in self.readers:
            t.join(timeout)
            assert not t.is_alive(), f"{self.args[:2]}: output not closed within {timeout} s"
        out = []
        while not self.lines.empty():
            name, line = self.lines.get_nowait()
            out.append(f"{name}: {line}")
        return out

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        """Signals the process and waits for it (killing it after ``timeout``)."""
        if self.p.poll() is None:
            self.p.send_signal(sig)
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(timeout)
        return self.p.returncode


class Manager:
    """A running ``argon manager``."""

    def __init__(self, proc: Proc, addr: str, http: Optional[str] = None) -> None:
        self.proc = proc
        self.addr = addr
        self.http = http

    @property
    def port(self) -> int:
        return int(self.addr.rsplit(":", 1)[1])


@pytest.fixture(scope="session")
def argon() -> str:
    return argon_bin()


@pytest.fixture(scope="session")
def key_file(argon: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("key") / "key"
    subprocess.run([argon, "keygen", str(path)], check=True, capture_output=True, timeout=WAIT)
    return str(path)


@pytest.fixture
def procs() -> Iterator[List[Proc]]:
    started: List[Proc] = []
    yield started
    # Workers first, while their manager still runs, so that they drain.
    for p in reversed(started):
        if p.args[1] != "manager":
            p.stop()
    for p in started:
        if p.args[1] == "manager":
            p.stop()


@pytest.fixture
def start_manager(argon: str, key_file: str, procs: List[Proc]) -> Callable[..., Manager]:
    def start(port: int = 0, queue_factor: int = 3, key: Optional[str] = None, http: bool = False) -> Manager:
        args = [argon, "manager", "--host", "127.0.0.1", "--port", str(port), "--key", key or key_file]
        args += ["--queue-factor", str(queue_factor)]
        if http:
            args += ["--http", "127.0.0.1:0"]
        proc = Proc(args)
        procs.append(proc)
        m = proc.wait_line(r"argon manager listening on (\S+)", stream="out")
        h = proc.wait_line(r"argon manager http on (\S+)", stream="out") if http else None
        return Manager(proc, m.group(1), h.group(1) if h else None)

    return start


@pytest.fixture
def manager(start_manager: Callable[..., Manager]) -> Manager:
    return start_manager()


@pytest.fixture
def start_rust_worker(argon: str, key_file: str, procs: List[Proc]) -> Callable[..., Proc]:
    def start(mgr: Manager, capacity: int = 4) -> Proc:
        proc = Proc([argon, "worker", "--mgr", mgr.addr, "--key", key_file, "--capacity", str(capacity)])
        procs.append(proc)
        proc.wait_line(r"registered as worker \d+")
        return proc

    return start


@pytest.fixture
def rust_worker(manager: Manager, start_rust_worker: Callable[..., Proc]) -> Proc:
    return start_rust_worker(manager)


class ThreadWorker:
    """A Python Worker served on a background thread."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.error: Optional[BaseException] = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.worker.run(handle_signals=False)
        except BaseException as e:  # reported by stop()
            self.error = e

    def stop(self, timeout: float = WAIT) -> None:
        self.worker.stop()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the worker did not stop in time"
        if self.error is not None:
            raise self.error


@pytest.fixture
def serve() -> Iterator[Callable[[Worker], ThreadWorker]]:
    running: List[ThreadWorker] = []

    def start(worker: Worker, ready: bool = True) -> ThreadWorker:
        tw = ThreadWorker(worker)
        running.append(tw)
        if ready:
            assert worker.wait_ready(WAIT), f"the Python worker did not register (error: {tw.error!r})"
        return tw

    yield start
    for tw in running:
        tw.stop()


@pytest.fixture
def python() -> str:
    return sys.executable
