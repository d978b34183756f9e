"""The Python examples of the top-level README, run as written against
``argon cluster``: the client block's output must be what the README says,
and the worker block, saved as tasks.py and started with the README's
command, must answer the README's ``argon submit``."""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import List, Tuple

import pytest

from conftest import REPO, WAIT, Proc

SECTION = "### From Python"


def readme_blocks() -> List[Tuple[str, str]]:
    text = (REPO / "README.md").read_text()
    start = text.index(SECTION)
    end = text.find("\n#", start + len(SECTION))
    section = text[start : end if end != -1 else len(text)]
    return re.findall(r"```(\w*)\n(.*?)```", section, re.S)


def test_readme_has_the_examples() -> None:
    kinds = [k for k, _ in readme_blocks()]
    assert kinds == ["python", "", "python", "sh", "python", "sh", "python", ""]


@pytest.fixture
def cluster(argon: str, procs: List[Proc], monkeypatch: pytest.MonkeyPatch) -> Tuple[str, str]:
    proc = Proc([argon, "cluster", "--workers", "1", "--capacity", "4"])
    procs.append(proc)
    addr = proc.wait_line(r"^argon manager listening on (\S+)$", stream="out").group(1)
    key = proc.wait_line(r"^key file: (.+)$", stream="out").group(1)
    monkeypatch.setenv("ARGON_MGR", addr)
    monkeypatch.setenv("ARGON_KEY", key)
    return addr, key


def test_client_example_prints_what_the_readme_says(cluster: Tuple[str, str]) -> None:
    (_, client), (_, expected), *_ = readme_blocks()
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(client, "README.md (client example)", "exec"), {"__name__": "readme_client"})
    assert out.getvalue() == expected


def test_worker_example_serves_the_readme_submit(argon: str, cluster: Tuple[str, str], tmp_path: Path, procs: List[Proc]) -> None:
    _, _, (_, worker), (_, commands), *_ = readme_blocks()
    (tmp_path / "tasks.py").write_text(worker)
    start, submit = [line.split("#")[0].strip() for line in commands.strip().splitlines()]
    want = commands.strip().splitlines()[1].split("# prints ")[1].strip()
    assert start.endswith("&")
    cmd = shlex.split(start[:-1])
    assert cmd[0] == "python3"
    proc = Proc([sys.executable, *cmd[1:]], env=dict(os.environ), cwd=str(tmp_path))
    procs.append(proc)
    proc.wait_line(r"registered with the manager")
    args = shlex.split(submit)
    assert args[0] == "argon"
    out = subprocess.run([argon, *args[1:]], capture_output=True, text=True, timeout=WAIT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == want


def test_background_jobs_example_prints_what_the_readme_says(
    cluster: Tuple[str, str], tmp_path: Path, procs: List[Proc], monkeypatch: pytest.MonkeyPatch
) -> None:
    *_, (_, jobs), (_, command), (_, handler), (_, expected) = readme_blocks()
    (tmp_path / "jobs.py").write_text(jobs)
    start = command.split("#")[0].strip()
    assert start.endswith("&")
    cmd = shlex.split(start[:-1])
    assert cmd[0] == "python3"
    proc = Proc([sys.executable, *cmd[1:]], env=dict(os.environ), cwd=str(tmp_path))
    procs.append(proc)
    proc.wait_line(r"registered with the manager .* tasks thumbnail$")
    monkeypatch.syspath_prepend(str(tmp_path))
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            exec(compile(handler, "README.md (background jobs example)", "exec"), {"__name__": "readme_jobs"})
        assert out.getvalue() == expected
    finally:
        jobs_module = sys.modules.pop("jobs", None)
        if jobs_module is not None:
            jobs_module.app.close()


def test_python_readme_has_the_same_background_jobs_example() -> None:
    *_, (_, jobs), (_, command), (_, handler), _ = readme_blocks()
    text = (REPO / "python" / "README.md").read_text()
    for block in (jobs, command, handler):
        assert block in text
