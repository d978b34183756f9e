"""The manager's /metrics, read with the Prometheus project's own text parser
(``prometheus_client``) after tasks that succeed, fail and are denied: the
counters say what the test did."""

import urllib.request
from typing import Callable, Dict, Tuple

import pytest

from argon_tasks import Client, Denied, TaskFailed

from conftest import Manager, Proc, WAIT

parser = pytest.importorskip("prometheus_client.parser")

Samples = Dict[Tuple[str, Tuple[Tuple[str, str], ...]], float]


def scrape(mgr: Manager) -> Samples:
    assert mgr.http is not None
    with urllib.request.urlopen(f"http://{mgr.http}/metrics", timeout=WAIT) as r:
        text = r.read().decode()
    out: Samples = {}
    for family in parser.text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_metrics_count_what_the_clients_did(
    start_manager: Callable[..., Manager], start_rust_worker: Callable[..., Proc], key_file: str
) -> None:
    mgr = start_manager(queue_factor=1, http=True)
    start_rust_worker(mgr, capacity=1)
    with Client(mgr.addr, key_file) as c:
        for i in range(3):
            assert c.run("echo", i) == i
        with pytest.raises(TaskFailed):
            c.run("sleep", "soon")
        running = c.submit("sleep", 10_000, retry=False)
        queued = c.submit("sleep", 10_000, retry=False)
        with pytest.raises(Denied):
            c.run("echo", "no room", retry=False)
        m = scrape(mgr)
        assert m[("argon_tasks_submitted_total", ())] == 7
        assert m[("argon_tasks_accepted_total", ())] == 6
        assert m[("argon_tasks_denied_total", (("reason", "queue_full"),))] == 1
        ok = m[("argon_tasks_completed_total", (("outcome", "ok"), ("task", "echo")))]
        failed = m[("argon_tasks_completed_total", (("outcome", "failed"), ("task", "sleep")))]
        assert (ok, failed) == (3, 1)
        assert m[("argon_capacity_slots", ())] == 1
        assert m[("argon_slots_busy", ())] == 1
        assert m[("argon_queue_depth", (("priority", "normal"),))] == 1
        running.cancel()
        queued.cancel()
