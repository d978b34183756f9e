"""The exceptions that argon_tasks raises.

Every one derives from :class:`ArgonError`. Text that came from the manager
or a worker (task errors, deny reasons, error messages) is kept verbatim in
an attribute and shown escaped and shortened in the exception's message.
"""

from __future__ import annotations

from typing import Optional

from ._text import peer_text

__all__ = [
    "ArgonError",
    "ConnectError",
    "AtConnectionLimit",
    "AuthFailed",
    "ConnectionLost",
    "ProtocolError",
    "FrameTooLarge",
    "TaskFailed",
    "NotReady",
    "UnknownTask",
    "Denied",
    "Overloaded",
    "ClientClosed",
    "KeyFileError",
    "RegistrationRefused",
]


class ArgonError(Exception):
    """Base class of every error raised by argon_tasks."""


class ConnectError(ArgonError):
    """The manager could not be reached, or the handshake did not complete
    (connection refused, timeout, not an Argon manager)."""


class AtConnectionLimit(ConnectError):
    """The manager refused the connection because it holds as many as it may;
    trying again later may work."""

    def __init__(self, addr: str, reason: str) -> None:
        super().__init__(f"the manager at {addr} is at its connection limit ({reason}); try again later")
        self.addr = addr
        self.reason = reason


class AuthFailed(ArgonError):
    """The manager holds another key: its first sealed frame did not open."""


class ConnectionLost(ArgonError):
    """The connection to the manager ended while the call was pending.

    The task may or may not have run. The client reconnects for later calls.
    With retry on, a task whose id a manager with a task store told is
    waited on again instead; this is raised only when that gives nothing
    (no manager within ``retry_for``, or one that does not know the task).
    """


class ProtocolError(ArgonError):
    """The peer sent something the protocol does not allow."""


class FrameTooLarge(ArgonError, ValueError):
    """A message would not fit in one frame; nothing was sent."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"a message of {size} bytes exceeds the frame limit of {limit} bytes")
        self.size = size
        self.limit = limit


class TaskFailed(ArgonError):
    """The task ran and failed, or the manager could not run it.

    ``error`` is the text from the worker or the manager, unchanged;
    ``task`` the task's name (empty when its outcome was read by id, which
    does not tell it); ``task_id`` its id when known.
    """

    def __init__(self, task: str, error: str, task_id: Optional[int] = None) -> None:
        name = peer_text(task, 80) if task or task_id is None else str(task_id)
        super().__init__(f"task {name} failed: {peer_text(error)}")
        self.task = task
        self.error = error
        self.task_id = task_id


class NotReady(ArgonError, TimeoutError):
    """The task has not finished: its outcome was asked for without
    waiting, or the wait's timeout passed (the task goes on).

    ``state`` is ``"queued"`` or ``"running"`` as the manager said, or None
    after a timeout.
    """

    def __init__(self, task_id: int, state: Optional[str], timeout: Optional[float] = None) -> None:
        if state is None:
            super().__init__(f"task {task_id} did not finish within {timeout:g} s")
        else:
            super().__init__(f"task {task_id} has not finished: it is {state}")
        self.task_id = task_id
        self.state = state


class UnknownTask(ArgonError, LookupError):
    """The manager has no task by this id: it never accepted one, the task
    was attached (its outcome went to its client), or its kept outcome
    expired, was evicted, or went with a restart of a manager without a
    task store."""

    def __init__(self, task_id: int) -> None:
        super().__init__(f"the manager does not know task {task_id} (never accepted, or its outcome is no longer kept)")
        self.task_id = task_id


class Denied(ArgonError):
    """The manager had no room for the task and the caller asked not to
    retry. The task was not accepted; ``retry_after`` is the manager's hint
    in seconds."""

    def __init__(self, task: str, reason: str, retry_after: float) -> None:
        super().__init__(
            f"task {peer_text(task, 80)} denied: {peer_text(reason)}; try again in {retry_after:.3f} s"
        )
        self.task = task
        self.reason = reason
        self.retry_after = retry_after


class Overloaded(ArgonError):
    """The manager kept denying the task for longer than the client's
    ``retry_for`` bound. The task was not accepted."""

    def __init__(self, task: str, reason: str, denials: int, waited: float) -> None:
        super().__init__(
            f"task {peer_text(task, 80)} still denied after {denials} tries over {waited:.1f} s: "
            f"{peer_text(reason)}"
        )
        self.task = task
        self.reason = reason
        self.denials = denials
        self.waited = waited


class ClientClosed(ArgonError):
    """The client was closed before or while the call was made."""


class KeyFileError(ArgonError, ValueError):
    """The key file cannot be read or is empty."""


class RegistrationRefused(ArgonError):
    """The manager refused the worker's registration for a reason that a
    retry cannot fix (capacity, frame limit, no tasks)."""

    def __init__(self, message: str, detail: Optional[str] = None) -> None:
        super().__init__(message if detail is None else f"{message}: {peer_text(detail)}")
        self.detail = detail
