"""Command line: ``python -m argon_tasks worker MODULE:OBJECT``.

Imports MODULE (from the current directory too), takes OBJECT from it (a
:class:`argon_tasks.Worker`, or an :class:`argon_tasks.App` whose tasks it
serves; dotted attribute paths allowed) and serves it until SIGINT or
SIGTERM. ``--mgr`` and ``--key`` override the worker's own
settings, falling back to ``$ARGON_MGR`` and ``$ARGON_KEY``. Exit status: 0
after a graceful stop, 2 for bad usage, 77 when the manager holds another
key, 1 for other failures.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from typing import List, Optional

from .errors import ArgonError, AuthFailed, KeyFileError
from .app import App
from .worker import Worker

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_AUTH = 77


def load_worker(spec: str) -> Worker:
    """The Worker named by ``MODULE:OBJECT`` (an App's new worker);
    ValueError otherwise."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"{spec!r} is not MODULE:OBJECT")
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    module = importlib.import_module(module_name)
    obj: object = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ValueError(f"module {module_name} has no attribute {attr}") from None
    if isinstance(obj, App):
        return obj.worker()
    if not isinstance(obj, Worker):
        raise ValueError(f"{spec} is a {type(obj).__name__}, not an argon_tasks.Worker or App")
    return obj


def main(argv: Optional[List[str]] = None) -> int:
    """Runs the command line; returns the exit status."""
    p = argparse.ArgumentParser(prog="python -m argon_tasks", description="Argon tasks in Python.")
    sub = p.add_subparsers(dest="command", required=True)
    w = sub.add_parser("worker", help="serve the tasks of a Worker or App object")
    w.add_argument("target", metavar="MODULE:OBJECT", help="where the Worker or App is, e.g. tasks:app")
    w.add_argument("--mgr", metavar="HOST:PORT", help="manager address [env ARGON_MGR]")
    w.add_argument("--key", metavar="FILE", help="the cluster's key file [env ARGON_KEY]")
    w.add_argument("--capacity", type=int, metavar="N", help="slots: tasks run at once")
    w.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    w.add_argument("-q", "--quiet", action="count", default=0, help="less log output")
    a = p.parse_args(argv)

    level = logging.INFO + 10 * (a.quiet - a.verbose)
    logging.basicConfig(level=max(logging.DEBUG, level), format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    log = logging.getLogger("argon_tasks")
    try:
        worker = load_worker(a.target)
    except (ValueError, ImportError) as e:
        log.error("cannot load %s: %s", a.target, e)
        return EXIT_USAGE
    mgr = a.mgr or os.environ.get("ARGON_MGR")
    if mgr:
        worker.mgr = mgr
    key = a.key or os.environ.get("ARGON_KEY")
    if key:
        worker.key_file = key
        worker.key = None
    if a.capacity is not None:
        worker.capacity = a.capacity
    try:
        worker.run()
    except AuthFailed as e:
        log.error("%s", e)
        return EXIT_AUTH
    except (KeyFileError, ValueError) as e:
        log.error("%s", e)
        return EXIT_USAGE
    except ArgonError as e:
        log.error("%s", e)
        return EXIT_FAILED
    return 0


if __name__ == "__main__":
    sys.exit(main())
