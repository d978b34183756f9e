"""The Argon side of bench/python_vs_celery.sh.

As a module it defines ``worker``, an argon_tasks Worker with an ``echo``
task (a plain function, so it runs on the worker's thread pool), for
``python -m argon_tasks worker argon_echo:worker``. Run as a script it is
the client: ``argon_echo.py TASKS CONCURRENCY`` maps ``echo`` over
``range(TASKS)`` with the blocking Client (manager and key from ARGON_MGR
and ARGON_KEY), checks every result and prints one JSON line.
"""

import json
import os
import sys
import time

from argon_tasks import Client, Worker

worker = Worker(capacity=int(os.environ.get("BENCH_CAPACITY", "16")))


@worker.task("echo")
def echo(x):
    return x


def main() -> int:
    tasks, concurrency = int(sys.argv[1]), int(sys.argv[2])
    with Client() as client:
        assert client.run("echo", -1) == -1
        start = time.perf_counter()
        for i, r in enumerate(client.map("echo", range(tasks), concurrency=concurrency)):
            if r != i:
                raise SystemExit(f"echo {i} returned {r!r}")
        seconds = time.perf_counter() - start
    print(json.dumps({"system": "argon", "tasks": tasks, "seconds": seconds, "per_s": tasks / seconds}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
