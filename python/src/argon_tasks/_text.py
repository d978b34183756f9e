"""Making text from a peer safe to show in a message or a log line."""

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
