"""One task registry for producers and workers: :class:`App`.

A module defines its tasks once with ``@app.task()``; the web app (or any
producer) imports the module and calls ``task.delay(args)`` or
``task.submit(args)``, which go through one shared :class:`Client`, and
``python -m argon_tasks worker module:app`` serves the same tasks with a
:class:`Worker` built from the registry.
"""

from __future__ import annotations

import functools
import os
import threading
from typing import Any, Callable, Dict, Generic, Optional, TypeVar, Union

from .client import Client, TaskFuture
from .worker import Worker, _check_task_name

__all__ = ["App", "AppTask"]

A = TypeVar("A")
R = TypeVar("R")

_OPTIONS = ("priority", "timeout", "attempts", "retry", "retries")


def _check_options(options: Dict[str, Any]) -> None:
    unknown = set(options) - set(_OPTIONS)
    if unknown:
        raise TypeError(f"unexpected option(s): {', '.join(sorted(unknown))} (options: {', '.join(_OPTIONS)})")


class AppTask(Generic[A, R]):
    """A function registered with :meth:`App.task`.

    Calling it runs the function here, as if undecorated. :meth:`delay`
    enqueues it detached and returns its id; :meth:`submit` sends it
    attached and returns a :class:`TaskFuture`; :meth:`run` waits for its
    value. ``name`` is the task's name on the wire; ``options`` the submit
    options given to the decorator, which the keyword arguments of each call
    override.
    """

    def __init__(self, app: "App", name: str, fn: Callable[[A], R], options: Dict[str, Any]) -> None:
        self.app = app
        self.name = name
        self.fn = fn
        self.options = options
        # Where a worker's child process finds the function (process=True):
        # the module attribute is this object, not the function.
        self.__argon_fn__ = fn
        functools.update_wrapper(self, fn)

    def __call__(self, args: A) -> R:
        return self.fn(args)

    def delay(self, args: Optional[A] = None, **options: Any) -> int:
        """Enqueues the task detached (see :meth:`Client.enqueue`) and
        returns its id; read the outcome later with ``app.result(id)``."""
        return self.app.client.enqueue(self.name, args, **self._merged(options))

    def submit(self, args: Optional[A] = None, **options: Any) -> TaskFuture:
        """Sends the task attached (see :meth:`Client.submit`) and returns
        its :class:`TaskFuture` at once."""
        return self.app.client.submit(self.name, args, **self._merged(options))

    def run(self, args: Optional[A] = None, **options: Any) -> R:
        """Runs the task on a worker and returns its value."""
        return self.submit(args, **options).result()  # type: ignore[no-any-return]

    def _merged(self, options: Dict[str, Any]) -> Dict[str, Any]:
        _check_options(options)
        return {**self.options, **options}

    def __repr__(self) -> str:
        return f"<argon task {self.name}>"


class App:
    """A task registry with the client and worker settings to use it.

    ``mgr`` is the manager's ``HOST:PORT`` (default ``$ARGON_MGR``, else
    127.0.0.1:8000); ``key`` the cluster's key file (a path; default
    ``$ARGON_KEY``), or its contents as bytes. ``capacity`` is the slots of
    the worker :meth:`worker` builds (default: the CPU count);
    ``client_options`` go to the :class:`Client` (``retry``, ``retry_for``,
    ...). Nothing connects until the first call: a module that defines an
    App can be imported anywhere.
    """

    def __init__(
        self,
        mgr: Optional[str] = None,
        key: Optional[Union[str, "os.PathLike[str]", bytes]] = None,
        *,
        capacity: Optional[int] = None,
        **client_options: Any,
    ) -> None:
        self.mgr = mgr
        self.key = key
        self.capacity = capacity
        self.client_options = client_options
        self.tasks: Dict[str, AppTask[Any, Any]] = {}
        self._worker_opts: Dict[str, Dict[str, bool]] = {}
        self._client: Optional[Client] = None
        self._lock = threading.Lock()

    def task(
        self,
        name: Optional[str] = None,
        *,
        thread: bool = True,
        process: bool = False,
        **options: Any,
    ) -> Callable[[Callable[[A], R]], AppTask[A, R]]:
        """Decorator registering a function as task ``name`` (default: the
        function's name). ``thread`` and ``process`` say how a worker runs
        it (see :meth:`Worker.task`); ``options`` (``priority``,
        ``timeout``, ``attempts``, ``retry``, ``retries``) are the defaults
        of its :meth:`AppTask.delay` and :meth:`AppTask.submit`."""
        _check_options(options)

        def register(fn: Callable[[A], R]) -> AppTask[A, R]:
            task_name = _check_task_name(name or fn.__name__)
            if task_name in self.tasks:
                raise ValueError(f"task {task_name} is registered twice")
            t: AppTask[A, R] = AppTask(self, task_name, fn, dict(options))
            self.tasks[task_name] = t
            self._worker_opts[task_name] = {"thread": thread, "process": process}
            return t

        return register

    def _key_args(self) -> Dict[str, Any]:
        if isinstance(self.key, bytes):
            return {"key": self.key}
        return {"key_file": self.key}

    @property
    def client(self) -> Client:
        """The App's :class:`Client`, made on first use and shared by every
        thread (it is thread-safe)."""
        c = self._client
        if c is None:
            with self._lock:
                c = self._client
                if c is None:
                    c = self._client = Client(self.mgr, **self._key_args(), **self.client_options)
        return c

    def result(self, task_id: int, *, wait: bool = True, timeout: Optional[float] = None) -> Any:
        """The outcome of task ``task_id``; see :meth:`Client.result`."""
        return self.client.result(task_id, wait=wait, timeout=timeout)

    def cancel(self, task_id: int) -> str:
        """Cancels task ``task_id``; see :meth:`Client.cancel`."""
        return self.client.cancel(task_id)

    def worker(self, **worker_options: Any) -> Worker:
        """A new :class:`Worker` serving every registered task, with the
        App's manager, key and capacity; ``worker_options`` go to the
        Worker (``stop_timeout``, ``heartbeat``, ...)."""
        if not self.tasks:
            raise ValueError("the app has no tasks: add some with @app.task()")
        w = Worker(self.mgr, capacity=self.capacity, **self._key_args(), **worker_options)
        for name, t in self.tasks.items():
            w.add_task(name, t.fn, **self._worker_opts[name])
        return w

    def close(self) -> None:
        """Closes the App's client, if it made one (pending calls raise
        ClientClosed); a later call makes a new one."""
        with self._lock:
            c, self._client = self._client, None
        if c is not None:
            c.close()
