"""The byte-level pieces against docs/PROTOCOL.md, without a manager: the
§9 test vectors, key files, sealing and counters, depth, retry delays."""

from __future__ import annotations

import math
import os
import struct
from pathlib import Path
from typing import Any, List

import pytest
from cryptography.exceptions import InvalidTag

from argon_tasks import FrameTooLarge, KeyFileError, ProtocolError
from argon_tasks import _wire
from argon_tasks._core import backoff_delay, encode_submit
from argon_tasks._link import split_addr
from argon_tasks._text import peer_text
from argon_tasks.worker import format_duration

KEY_TEXT = b"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n"
MASTER = "a02f57480d6b890eb8c96dfb6da079f2b40743a2b0a634100fb59f67320b0466"
K_I2R = "5a97979d2b4cf4d280e78841311c17a3d1fce05218efc62bd7c6b5f7b6ccc6c2"
K_R2I = "0e1d311df0378ca56e6f38a6ad1559056b9e46c8c19a6353bbdb50db1c7dfa75"
SUBMIT_91 = (
    "81 a6 73 75 62 6d 69 74 86 a2 69 64 07 a4 74 61 73 6b a4 65 63 68 6f a4 61 72 67 73 92 a5 68 65 6c 6c"
    " 6f 2a a8 70 72 69 6f 72 69 74 79 a4 68 69 67 68 aa 74 69 6d 65 6f 75 74 5f 6d 73 cd 13 88 a8 61 74 74"
    " 65 6d 70 74 73 01"
)
AUTH_FRAME_92 = (
    "000000440000000000000000"
    "1ad3a27babceec405e1a244adebb14e9bc96cde7bfdc72eea0abe0884b75383e517029420df841513a0bba83c285edf5a5823b196cf55f70fe454f39"
)


def test_master_and_session_keys_match_section_9_2() -> None:
    master = _wire.master_key(KEY_TEXT)
    assert master.hex() == MASTER
    i2r, r2i = _wire.session_keys(master, bytes(range(32)), bytes(range(32, 64)))
    assert (i2r.hex(), r2i.hex()) == (K_I2R, K_R2I)


def test_sealed_auth_frame_matches_section_9_2() -> None:
    i2r, _ = _wire.session_keys(bytes.fromhex(MASTER), bytes(range(32)), bytes(range(32, 64)))
    plain = _wire.pack({"auth": {"version": 1, "role": "client", "agent": "example/1"}})
    assert _wire.Sealer(i2r).seal(plain, 4096).hex() == AUTH_FRAME_92


def test_hello_frame_layout() -> None:
    assert _wire.hello_frame(bytes(range(32))) == bytes.fromhex("00000025 4152474e 01") + bytes(range(32))


def test_submit_encoding_matches_section_9_1() -> None:
    body = encode_submit("echo", ["hello", 42], "high", 5.0, 1, _wire.DEFAULT_MAX_FRAME)
    # The engine writes `id` first; the document writes it first too.
    plain = b"\x81\xa6submit" + bytes([0x80 | 6]) + b"\xa2id" + _wire.pack(7) + body[1:]
    assert plain == bytes.fromhex(SUBMIT_91)


def test_submit_asks_for_the_task_id_only_when_told_to() -> None:
    asked = _wire.unpack(encode_submit("echo", 1, "normal", None, None, _wire.DEFAULT_MAX_FRAME, None, True))
    assert asked == {"task": "echo", "args": 1, "want_id": True}
    plain = _wire.unpack(encode_submit("echo", 1, "normal", None, None, _wire.DEFAULT_MAX_FRAME))
    assert plain == {"task": "echo", "args": 1}, "left out when false, as before"


def test_submit_carries_a_delay_in_milliseconds_only_when_given() -> None:
    frame = _wire.DEFAULT_MAX_FRAME
    later = _wire.unpack(encode_submit("echo", 1, "normal", None, None, frame, None, False, delay=1.5))
    assert later == {"task": "echo", "args": 1, "delay_ms": 1500}
    for bad in (-1, float("nan"), True, "1"):
        with pytest.raises(ValueError):
            encode_submit("echo", 1, "normal", None, None, frame, None, False, delay=bad)  # type: ignore[arg-type]


def test_key_file_trims_trailing_whitespace_only(tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_bytes(KEY_TEXT[:-1] + b" \t\r\n\x0c")
    os.chmod(path, 0o600)
    master, warnings = _wire.load_key_file(path)
    assert master.hex() == MASTER and warnings == []
    path.write_bytes(KEY_TEXT[:-1] + b"\x0b")
    assert _wire.load_key_file(path)[0].hex() != MASTER


def test_key_file_warnings_and_errors(tmp_path: Path) -> None:
    short = tmp_path / "short"
    short.write_bytes(b"tiny\n")
    os.chmod(short, 0o644)
    _, warnings = _wire.load_key_file(short)
    assert any("only 4 bytes" in w for w in warnings)
    assert any("chmod 600" in w for w in warnings)
    empty = tmp_path / "empty"
    empty.write_bytes(b" \n\n")
    with pytest.raises(KeyFileError, match="empty"):
        _wire.load_key_file(empty)
    with pytest.raises(KeyFileError, match="cannot read"):
        _wire.load_key_file(tmp_path / "missing")


def test_counters_must_follow_in_sequence() -> None:
    key = os.urandom(32)
    sealer, opener = _wire.Sealer(key), _wire.Opener(key)
    frames = [sealer.seal(_wire.pack(i), 1024) for i in range(3)]
    assert [struct.unpack(">Q", f[4:12])[0] for f in frames] == [0, 1, 2]
    assert _wire.unpack(opener.open(frames[0][4:])) == 0
    with pytest.raises(ProtocolError, match="counter 2, expected 1"):
        opener.open(frames[2][4:])
    assert _wire.unpack(opener.open(frames[1][4:])) == 1
    with pytest.raises(ProtocolError, match="counter 1, expected 2"):
        opener.open(frames[1][4:])


def test_tampered_frame_does_not_open() -> None:
    key = os.urandom(32)
    frame = bytearray(_wire.Sealer(key).seal(b"\x80", 1024))
    frame[-1] ^= 1
    with pytest.raises(InvalidTag):
        _wire.Opener(key).open(bytes(frame[4:]))
    with pytest.raises(ProtocolError, match="shorter"):
        _wire.Opener(key).open(b"\x00" * 23)


def test_oversized_message_is_refused_before_sealing() -> None:
    sealer = _wire.Sealer(os.urandom(32))
    with pytest.raises(FrameTooLarge) as e:
        sealer.seal(b"x" * 1001, 1024)
    assert (e.value.size, e.value.limit) == (1025, 1024)
    assert sealer.counter == 0
    with pytest.raises(FrameTooLarge):
        encode_submit("echo", "x" * 2000, "normal", None, None, 1024)


def test_value_depth_counts_like_the_manager() -> None:
    def nested(n: int) -> object:
        v: object = 1
        for _ in range(n):
            v = [v]
        return v

    assert _wire.value_depth(5) == 0
    assert _wire.value_depth([]) == 1
    assert _wire.value_depth({"a": [1, {"b": 2}]}) == 3
    assert _wire.value_depth({(1, (2,)): 0}) == 3
    assert _wire.value_depth(nested(120)) == 120
    assert _wire.value_depth(nested(5000)) == 121
    encode_submit("echo", nested(120), "normal", None, None, _wire.DEFAULT_MAX_FRAME)
    with pytest.raises(ValueError, match="deeper than 120"):
        encode_submit("echo", nested(121), "normal", None, None, _wire.DEFAULT_MAX_FRAME)


def test_submit_options_are_checked() -> None:
    for kwargs in ({"priority": "urgent"}, {"timeout": 0}, {"timeout": float("nan")}, {"attempts": 0}):
        opts = {"priority": "normal", "timeout": None, "attempts": None, **kwargs}
        with pytest.raises(ValueError):
            encode_submit("echo", None, opts["priority"], opts["timeout"], opts["attempts"], 1 << 20)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        encode_submit("echo", {1, 2}, "normal", None, None, 1 << 20)
    with pytest.raises(ValueError):
        encode_submit("", None, "normal", None, None, 1 << 20)


def test_outcome_and_field_checks() -> None:
    assert _wire.get_outcome({"outcome": {"done": {"value": None}}}) == ("done", None, "", 0)
    assert _wire.get_outcome({"outcome": {"denied": {"reason": "queue full", "retry_after_ms": 20}}}) == (
        "denied",
        None,
        "queue full",
        20,
    )
    for bad in ({"outcome": None}, {"outcome": {"done": {}}}, {"outcome": {"hug": {}}}, {"outcome": {"failed": {}}}):
        with pytest.raises(ProtocolError):
            _wire.get_outcome(bad)
    with pytest.raises(ProtocolError):
        _wire.get_int({"id": -1}, "id")
    with pytest.raises(ProtocolError):
        _wire.get_int({"id": True}, "id")
    with pytest.raises(ProtocolError):
        _wire.get_int({"id": 2**64}, "id")
    assert _wire.get_str({"task": b"echo"}, "task") == "echo"
    with pytest.raises(ProtocolError):
        _wire.get_str({"task": b"\xff"}, "task")


def test_unpack_rejects_garbage() -> None:
    with pytest.raises(ProtocolError):
        _wire.unpack(b"\x92\x01")
    with pytest.raises(ProtocolError):
        _wire.unpack(b"\xdb\xff\xff\xff\xffab")


def test_peer_text_escapes_and_cuts() -> None:
    assert peer_text("ok") == "ok"
    assert peer_text("a\nb\x1b[31m") == "a\\nb\\u{1b}[31m"
    shown = peer_text("é" * 300, 10)
    assert shown.startswith("é" * 10) and shown.endswith("…[580 bytes cut]")


def test_backoff_grows_logarithmically_with_jitter_and_cap() -> None:
    for n in range(1, 50):
        d = backoff_delay(n, 0.0, 0.01, 5.0)
        low = 0.01 * (1 + math.log(n))
        assert low <= d <= min(low * 1.25, 5.0) + 1e-12
    assert backoff_delay(3, 0.5, 0.01, 5.0) >= 0.5 * (1 + math.log(3))
    assert backoff_delay(10**6, 60.0, 0.01, 5.0) == 5.0


def test_durations_read_like_the_rust_worker() -> None:
    assert format_duration(250) == "250ms"
    assert format_duration(1500) == "1s 500ms"
    assert format_duration(3_723_004) == "1h 2m 3s 4ms"


def test_manager_addresses() -> None:
    assert split_addr("127.0.0.1:8000") == ("127.0.0.1", 8000)
    assert split_addr("[::1]:9") == ("::1", 9)
    for bad in ("nohost", ":80", "h:", "h:0", "h:70000", "h:x"):
        with pytest.raises(ValueError):
            split_addr(bad)


def test_submit_carries_retries_only_when_given() -> None:
    without = encode_submit("echo", None, "normal", None, None, _wire.DEFAULT_MAX_FRAME)
    assert b"retries" not in without
    body = encode_submit("echo", None, "normal", None, None, _wire.DEFAULT_MAX_FRAME, 3)
    assert body.endswith(b"\xa7retries\x03")
    assert encode_submit("echo", None, "normal", None, None, _wire.DEFAULT_MAX_FRAME, 0).endswith(b"\xa7retries\x00")
    bad_values: List[Any] = [-1, True, 1.5, _wire.U32_MAX + 1]
    for bad in bad_values:
        with pytest.raises(ValueError, match="retries"):
            encode_submit("echo", None, "normal", None, None, _wire.DEFAULT_MAX_FRAME, bad)
