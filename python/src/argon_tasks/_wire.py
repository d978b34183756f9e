"""The byte-level parts of the Argon protocol (docs/PROTOCOL.md, version 1).

Key material and HKDF derivations, the clear hello and refusal frames,
AES-256-GCM sealing with counter nonces, MessagePack encoding of messages
and values, the nesting-depth rule, and checked access to message fields.
Nothing here does I/O.
"""

from __future__ import annotations

import os
import stat
import struct
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import msgpack  # type: ignore[import-untyped]
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ._text import peer_text
from .errors import FrameTooLarge, KeyFileError, ProtocolError

MAGIC = b"ARGN"
VERSION = 1
NONCE_LEN = 32
HELLO_LEN = 4 + 1 + NONCE_LEN
REFUSAL_LEN = 6
REFUSAL_REASONS = {1: "too many connections", 2: "too many handshakes in progress"}
COUNTER_LEN = 8
TAG_LEN = 16
SEAL_OVERHEAD = COUNTER_LEN + TAG_LEN
AUTH_FRAME_MAX = 4096
DEFAULT_MAX_FRAME = 16 * 1024 * 1024
MIN_MAX_FRAME = 1024
MAX_MAX_FRAME = 2**32 - 1
MAX_VALUE_DEPTH = 120
U64_MAX = 2**64 - 1
U32_MAX = 2**32 - 1

_MASTER_SALT = b"argon/1 master key"
_MASTER_INFO = b"master"
_INFO_I2R = b"argon/1 initiator to responder"
_INFO_R2I = b"argon/1 responder to initiator"
_KEY_TRIM = b" \t\n\x0c\r"
_SHORT_KEY = 32

_NONCE_PAD = b"\x00\x00\x00\x00"
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")

PathLike = Union[str, "os.PathLike[str]"]


def _hkdf(ikm: bytes, salt: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(ikm)


def master_key(material: bytes) -> bytes:
    """The 32-byte master key for a key file's contents: its bytes without
    trailing ASCII whitespace, stretched with HKDF-SHA256 (not base64-decoded)."""
    trimmed = bytes(material).rstrip(_KEY_TRIM)
    if not trimmed:
        raise KeyFileError("the key is empty")
    return _hkdf(trimmed, _MASTER_SALT, _MASTER_INFO)


def load_key_file(path: PathLike) -> Tuple[bytes, List[str]]:
    """Reads a key file (as written by ``argon keygen``) and returns its
    master key and the warnings a person should see about it."""
    try:
        with open(path, "rb") as f:
            raw = f.read(1024 * 1024 + 1)
            mode = os.fstat(f.fileno()).st_mode
    except OSError as e:
        raise KeyFileError(f"cannot read key file {os.fspath(path)}: {e.strerror or e}") from e
    if len(raw) > 1024 * 1024:
        raise KeyFileError(f"key file {os.fspath(path)} is larger than 1 MiB")
    warnings = []
    trimmed = raw.rstrip(_KEY_TRIM)
    if not trimmed:
        raise KeyFileError(f"key file {os.fspath(path)} is empty")
    if len(trimmed) < _SHORT_KEY:
        warnings.append(
            f"key file {os.fspath(path)} holds only {len(trimmed)} bytes; "
            "use `argon keygen` for a strong key"
        )
    if stat.S_IMODE(mode) & 0o077:
        warnings.append(f"key file {os.fspath(path)} is open to group or others: chmod 600 it")
    return master_key(trimmed), warnings


def session_keys(master: bytes, initiator_nonce: bytes, responder_nonce: bytes) -> Tuple[bytes, bytes]:
    """The (initiator→responder, responder→initiator) direction keys."""
    salt = initiator_nonce + responder_nonce
    return _hkdf(master, salt, _INFO_I2R), _hkdf(master, salt, _INFO_R2I)


def hello_frame(nonce: bytes) -> bytes:
    """A complete clear hello frame carrying ``nonce``."""
    return _U32.pack(HELLO_LEN) + MAGIC + bytes([VERSION]) + nonce


def check_max_frame(limit: int) -> int:
    """``limit`` if it is a valid frame limit, else ValueError."""
    if not isinstance(limit, int) or not MIN_MAX_FRAME <= limit <= MAX_MAX_FRAME:
        raise ValueError(f"max_frame must be between {MIN_MAX_FRAME} and {MAX_MAX_FRAME}, got {limit!r}")
    return limit


class Sealer:
    """Seals outgoing messages under one direction key, counting from 0."""

    __slots__ = ("_aead", "counter")

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)
        self.counter = 0

    def seal(self, plain: bytes, limit: int) -> bytes:
        """The complete frame (length prefix included) for ``plain``;
        FrameTooLarge, with nothing consumed, if its body exceeds ``limit``."""
        size = len(plain) + SEAL_OVERHEAD
        if size > limit:
            raise FrameTooLarge(size, limit)
        c = _U64.pack(self.counter)
        sealed = self._aead.encrypt(_NONCE_PAD + c, plain, None)
        self.counter += 1
        return _U32.pack(size) + c + sealed


class Opener:
    """Opens incoming sealed frame bodies, enforcing the counter sequence."""

    __slots__ = ("_aead", "counter")

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)
        self.counter = 0

    def open(self, body: Union[bytes, memoryview]) -> bytes:
        """The plaintext of a frame body. ProtocolError on a short body or a
        counter out of sequence; cryptography's InvalidTag when it does not
        authenticate."""
        if len(body) < SEAL_OVERHEAD:
            raise ProtocolError(f"sealed frame of {len(body)} bytes is shorter than {SEAL_OVERHEAD}")
        c = bytes(body[:COUNTER_LEN])
        (counter,) = _U64.unpack(c)
        if counter != self.counter:
            raise ProtocolError(f"frame counter {counter}, expected {self.counter}")
        plain: bytes = self._aead.decrypt(_NONCE_PAD + c, body[COUNTER_LEN:], None)
        self.counter += 1
        return plain


def pack(message: Any) -> bytes:
    """MessagePack bytes of a message or value (str as str, bytes as bin).

    TypeError/ValueError/OverflowError for values MessagePack cannot hold.
    """
    data: bytes = msgpack.packb(message, use_bin_type=True)
    return data


def unpack(data: Union[bytes, memoryview]) -> Any:
    """The value in MessagePack ``data``; ProtocolError if it is not one
    complete value."""
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=False)
    except (ValueError, TypeError, msgpack.UnpackException, RecursionError) as e:
        raise ProtocolError(f"undecodable message: {e}") from e


ExtType = msgpack.ExtType


def value_depth(value: Any, stop: int = MAX_VALUE_DEPTH) -> int:
    """Nesting depth of ``value`` (0 for a scalar, 1 for a flat list or
    dict), counted without recursion; stops counting past ``stop``."""
    if not isinstance(value, (list, tuple, dict)):
        return 0
    deepest = 0
    stack: List[Tuple[Any, int]] = [(value, 1)]
    while stack:
        v, d = stack.pop()
        if d > deepest:
            deepest = d
            if deepest > stop:
                return deepest
        if isinstance(v, dict):
            for k, x in v.items():
                if isinstance(k, (list, tuple, dict)):
                    stack.append((k, d + 1))
                if isinstance(x, (list, tuple, dict)):
                    stack.append((x, d + 1))
        else:
            for x in v:
                if isinstance(x, (list, tuple, dict)):
                    stack.append((x, d + 1))
    return deepest


# --- checked access to decoded messages ---------------------------------------


def one_entry(value: Any, what: str) -> Tuple[str, Dict[Any, Any]]:
    """The (name, fields) of a one-entry map whose value is a map."""
    if not isinstance(value, dict) or len(value) != 1:
        raise ProtocolError(f"{what} is not a one-entry map")
    ((name, fields),) = value.items()
    if not isinstance(name, str):
        raise ProtocolError(f"{what} name is not a string")
    if not isinstance(fields, dict):
        raise ProtocolError(f"fields of {what} {peer_text(name, 40)} are not a map")
    return name, fields


def get_int(fields: Mapping[Any, Any], key: str, hi: int = U64_MAX, default: Optional[int] = None) -> int:
    """Field ``key`` as an integer in 0..=hi (``default`` when absent)."""
    v = fields.get(key)
    if v is None and key not in fields and default is not None:
        return default
    if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= hi:
        raise ProtocolError(f"field {key} is {peer_text(v, 40)}, expected an integer in 0..={hi}")
    return v


def get_opt_int(fields: Mapping[Any, Any], key: str) -> Optional[int]:
    """Field ``key`` as a u64, or None when it is nil or absent."""
    if fields.get(key) is None:
        return None
    return get_int(fields, key)


def get_str(fields: Mapping[Any, Any], key: str, default: Optional[str] = None) -> str:
    """Field ``key`` as a string (a bin holding UTF-8 is accepted too)."""
    v = fields.get(key)
    if v is None and key not in fields and default is not None:
        return default
    if isinstance(v, bytes):
        try:
            return v.decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError(f"field {key} is not valid UTF-8") from None
    if not isinstance(v, str):
        raise ProtocolError(f"field {key} is {peer_text(v, 40)}, expected a string")
    return v


def get_float(fields: Mapping[Any, Any], key: str, default: Optional[float] = None) -> float:
    """Field ``key`` as a float (an integer is accepted)."""
    v = fields.get(key)
    if v is None and key not in fields and default is not None:
        return default
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ProtocolError(f"field {key} is {peer_text(v, 40)}, expected a number")
    return float(v)


def get_bool(fields: Mapping[Any, Any], key: str, default: Optional[bool] = None) -> bool:
    """Field ``key`` as a bool."""
    v = fields.get(key)
    if v is None and key not in fields and default is not None:
        return default
    if not isinstance(v, bool):
        raise ProtocolError(f"field {key} is {peer_text(v, 40)}, expected a bool")
    return v


Outcome = Tuple[str, Any, str, int]
"""(kind, value, text, retry_after_ms): ("done", value, "", 0),
("failed", None, error, 0) or ("denied", None, reason, retry_after_ms)."""


def get_outcome(fields: Mapping[Any, Any]) -> Outcome:
    """The ``outcome`` field of a reply or finished."""
    kind, f = one_entry(fields.get("outcome"), "outcome")
    if kind == "done":
        if "value" not in f:
            raise ProtocolError("outcome done has no value")
        return ("done", f["value"], "", 0)
    if kind == "failed":
        return ("failed", None, get_str(f, "error"), 0)
    if kind == "denied":
        return ("denied", None, get_str(f, "reason"), get_int(f, "retry_after_ms"))
    raise ProtocolError(f"unknown outcome {peer_text(kind, 40)}")
