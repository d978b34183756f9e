"""The Celery side of bench/python_vs_celery.sh.

As a module it is a Celery app on Redis (broker and result backend at
REDIS_URL) with an ``echo`` task, for ``celery -A celery_echo worker``. Run
as a script it is the client: ``celery_echo.py TASKS CONCURRENCY`` sends
``echo(i)`` for i in ``range(TASKS)`` keeping CONCURRENCY in flight, takes
the results in input order, checks them and prints one JSON line.
"""

import collections
import json
import os
import sys
import time

from celery import Celery

app = Celery("celery_echo", broker=os.environ["REDIS_URL"], backend=os.environ["REDIS_URL"])
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    worker_prefetch_multiplier=32,
    task_ignore_result=False,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


@app.task(name="echo")
def echo(x):
    return x


def main() -> int:
    tasks, concurrency = int(sys.argv[1]), int(sys.argv[2])
    assert echo.delay(-1).get(timeout=60) == -1
    start = time.perf_counter()
    window = collections.deque()
    nxt = 0
    for i in range(tasks):
        window.append(echo.delay(i))
        if len(window) >= concurrency:
            r = window.popleft().get(timeout=60)
            if r != nxt:
                raise SystemExit(f"echo {nxt} returned {r!r}")
            nxt += 1
    while window:
        r = window.popleft().get(timeout=60)
        if r != nxt:
            raise SystemExit(f"echo {nxt} returned {r!r}")
        nxt += 1
    seconds = time.perf_counter() - start
    print(json.dumps({"system": "celery", "tasks": tasks, "seconds": seconds, "per_s": tasks / seconds}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
