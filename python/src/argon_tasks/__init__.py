"""Python client and worker for Argon, a distributed task system.

:class:`Client` (blocking) and :class:`AsyncClient` (asyncio) submit tasks to
an Argon manager; :class:`Worker` serves Python functions as tasks. Both
speak Argon's encrypted wire protocol (docs/PROTOCOL.md) directly.

    from argon_tasks import Client
    with Client("127.0.0.1:8000", "/etc/argon/key") as c:
        print(c.run("echo", ["hi"]))
"""

from ._wire import ExtType
from .app import App, AppTask
from .aio import AsyncClient, TaskHandle
from .client import Client, TaskFuture
from .errors import (
    ArgonError,
    AtConnectionLimit,
    AuthFailed,
    ClientClosed,
    ConnectError,
    ConnectionLost,
    Denied,
    FrameTooLarge,
    KeyFileError,
    NotReady,
    Overloaded,
    ProtocolError,
    RegistrationRefused,
    TaskFailed,
    UnknownTask,
)
from .status import Status, WorkerInfo
from .worker import RunInfo, Worker, current_run

__version__ = "0.1.0"

__all__ = [
    "App",
    "AppTask",
    "AsyncClient",
    "ArgonError",
    "AtConnectionLimit",
    "AuthFailed",
    "Client",
    "ClientClosed",
    "ConnectError",
    "ConnectionLost",
    "Denied",
    "ExtType",
    "FrameTooLarge",
    "KeyFileError",
    "NotReady",
    "Overloaded",
    "ProtocolError",
    "RegistrationRefused",
    "RunInfo",
    "Status",
    "TaskFailed",
    "TaskFuture",
    "TaskHandle",
    "UnknownTask",
    "Worker",
    "WorkerInfo",
    "current_run",
]
