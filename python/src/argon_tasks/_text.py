"""Making text safe to show: text from a peer in a message or a log line,
and a task's error as the one line a worker sends."""

from __future__ import annotations

_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\\": "\\\\"}


def peer_text(text: object, limit: int = 200) -> str:
    """``text`` with control characters escaped and cut to about ``limit``
    characters, for messages and logs. Non-strings are shown with repr."""
    s = text if isinstance(text, str) else repr(text)
    cut = 0
    if len(s) > limit:
        cut = len(s.encode("utf-8", "surrogatepass")) - len(s[:limit].encode("utf-8", "surrogatepass"))
        s = s[:limit]
    if not s.isprintable() or "\\" in s:
        s = "".join(_escape(c) for c in s)
    if cut:
        s += f"…[{cut} bytes cut]"
    return s


def _escape(c: str) -> str:
    e = _ESCAPES.get(c)
    if e is not None:
        return e
    if c.isprintable():
        return c
    return f"\\u{{{ord(c):x}}}"


#: Most bytes of a task's error text a worker sends.
MAX_ERROR_BYTES = 4000


def error_text(task: str, e: BaseException) -> str:
    """One line for a person about exception ``e`` raised by ``task``."""
    detail = " ".join(str(e).split())
    text = f"{type(e).__name__}: {detail}" if detail else type(e).__name__
    return clip(text, MAX_ERROR_BYTES)


def clip(text: str, max_bytes: int) -> str:
    """``text`` cut to at most ``max_bytes`` bytes of UTF-8."""
    raw = text.encode("utf-8", "replace")
    if len(raw) <= max_bytes:
        return text
    return raw[: max(0, max_bytes - 20)].decode("utf-8", "ignore") + " …[cut]"
