#!/usr/bin/env python3
"""An Argon client and worker written from docs/PROTOCOL.md alone.

It proves that the protocol document is enough to talk to a real manager from
another language. Against a manager that has a worker providing `echo`, it:

  1. checks its own key derivation and sealing against the test vectors of
     PROTOCOL.md section 9;
  2. connects as a client: submits `echo` (two at once, answers matched by
     id), a task nobody provides, a ping and a status request;
  3. connects with a wrong key and checks that the manager's auth frame does
     not open;
  4. sends a message a client may not send and checks for `error` + close;
  5. connects as a worker providing `py_upper` (capacity 1), prints
     `READY worker_id=N` on stdout, then serves `--serve N` assignments
     (py_upper upper-cases a string and fails on anything else), drains and
     leaves.

With `--expect-refusal` it only connects, against a manager at its
connection limit, and checks that the manager refuses it (section 3.5).

Exit status 0 when everything matched; 1 with a message on stderr otherwise.

Needs: pip install cryptography msgpack
"""

import argparse
import os
import socket
import struct
import sys
import time

try:
    import msgpack
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF
except ImportError as e:  # pragma: no cover
    sys.stderr.write(f"argon_client.py: {e}; run: pip install cryptography msgpack\n")
    sys.exit(2)

# --- constants from PROTOCOL.md ---------------------------------------------

MAGIC = b"ARGN"
VERSION = 1
NONCE_LEN = 32
HELLO_LEN = 4 + 1 + NONCE_LEN  # 37
REFUSAL_LEN = 4 + 1 + 1  # 6
REFUSAL_REASONS = {1: "too many connections", 2: "too many handshakes in progress"}
COUNTER_LEN = 8
TAG_LEN = 16
MAX_FRAME = 16 * 1024 * 1024
MASTER_SALT = b"argon/1 master key"
MASTER_INFO = b"master"
INFO_I2R = b"argon/1 initiator to responder"
INFO_R2I = b"argon/1 responder to initiator"
KEY_TRIM = b" \t\n\x0c\r"  # trailing ASCII whitespace, not vertical tab
AGENT = "argon-py-test/1"
IO_TIMEOUT = 15.0


class Mismatch(Exception):
    """Something the manager did differs from PROTOCOL.md."""


class WrongKey(Exception):
    """The peer's first sealed frame did not open."""


class Closed(Exception):
    """The peer closed the connection."""


class AtLimit(Exception):
    """The manager sent a refusal in place of its hello."""


def check(cond, what):
    if not cond:
        raise Mismatch(what)


# --- keys ---------------------------------------------------------------------


def hkdf(ikm, salt, info):
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(ikm)


def master_key(material):
    material = material.rstrip(KEY_TRIM)
    if not material:
        raise ValueError("key file is empty")
    return hkdf(material, MASTER_SALT, MASTER_INFO)


def session_keys(master, initiator_nonce, responder_nonce):
    salt = initiator_nonce + responder_nonce
    return hkdf(master, salt, INFO_I2R), hkdf(master, salt, INFO_R2I)


def gcm_nonce(counter):
    return b"\x00" * 4 + struct.pack(">Q", counter)


def pack(msg):
    return msgpack.packb(msg, use_bin_type=True)


def unpack(data):
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


# --- one connection ----------------------------------------------------------


class Connection:
    """A handshaken, sealed connection to the manager (we are the initiator)."""

    def __init__(self, addr, master, role):
        host, port = addr.rsplit(":", 1)
        self.sock = socket.create_connection((host.strip("[]"), int(port)), timeout=IO_TIMEOUT)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.send_counter = 0
        self.recv_counter = 0
        mine = os.urandom(NONCE_LEN)
        try:
            self.sock.sendall(struct.pack(">I", HELLO_LEN) + MAGIC + bytes([VERSION]) + mine)
            send_error = None
        except OSError as e:
            # A refusing manager may close before our hello is out; its
            # refusal is still there to read.
            send_error = e
        (length,) = struct.unpack(">I", self._read_exact(4))
        if length == REFUSAL_LEN:
            body = self._read_exact(REFUSAL_LEN)
            check(body[:4] == MAGIC and body[4] == 0, f"bad refusal frame {body.hex()}")
            reason = REFUSAL_REASONS.get(body[5], f"reason code {body[5]}")
            raise AtLimit(f"the manager is at its connection limit ({reason})")
        if send_error is not None:
            raise send_error
        check(length == HELLO_LEN, f"hello length {length}, expected {HELLO_LEN}")
        hello = self._read_exact(HELLO_LEN)
        check(hello[:4] == MAGIC, f"hello magic {hello[:4]!r}")
        check(hello[4] == VERSION, f"hello version {hello[4]}")
        theirs = hello[5:]
        i2r, r2i = session_keys(master, mine, theirs)
        self.sealer = AESGCM(i2r)
        self.opener = AESGCM(r2i)
        self.send({"auth": {"version": VERSION, "role": role, "agent": AGENT}})
        try:
            first = self.recv()
        except InvalidTag:
            raise WrongKey("the manager's auth frame does not open: it holds another key")
        name, fields = one_entry(first)
        check(name == "auth", f"first sealed message is {name}, expected auth")
        check(fields.get("version") == VERSION, f"manager speaks version {fields.get('version')}")
        check(fields.get("role") == "manager", f"peer role {fields.get('role')!r}, expected manager")
        self.peer_agent = fields.get("agent", "")

    def _read_exact(self, n):
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise Closed(f"connection closed after {len(buf)} of {n} bytes")
            buf += chunk
        return bytes(buf)

    def send(self, msg):
        plain = pack(msg)
        sealed = self.sealer.encrypt(gcm_nonce(self.send_counter), plain, None)
        body = struct.pack(">Q", self.send_counter) + sealed
        check(len(body) <= MAX_FRAME, "message too large for one frame")
        self.sock.sendall(struct.pack(">I", len(body)) + body)
        self.send_counter += 1

    def recv(self):
        """Next message other than a heartbeat; raises InvalidTag if it does
        not open, Closed on EOF."""
        while True:
            msg = self.recv_any()
            if msg != {"heartbeat": {}}:
                return msg

    def recv_any(self):
        """Next message, heartbeats included."""
        (length,) = struct.unpack(">I", self._read_exact(4))
        check(COUNTER_LEN + TAG_LEN <= length <= MAX_FRAME, f"bad frame length {length}")
        body = self._read_exact(length)
        (counter,) = struct.unpack(">Q", body[:COUNTER_LEN])
        check(counter == self.recv_counter, f"counter {counter}, expected {self.recv_counter}")
        plain = self.opener.decrypt(gcm_nonce(counter), body[COUNTER_LEN:], None)
        self.recv_counter += 1
        return unpack(plain)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def one_entry(msg):
    check(isinstance(msg, dict) and len(msg) == 1, f"not a one-entry map: {msg!r}")
    ((name, fields),) = msg.items()
    check(isinstance(fields, dict), f"fields of {name} are not a map: {fields!r}")
    return name, fields


# --- 1. self-test against PROTOCOL.md section 9 -------------------------------


def self_test():
    submit = {
        "submit": {
            "id": 7,
            "task": "echo",
            "args": ["hello", 42],
            "priority": "high",
            "timeout_ms": 5000,
            "attempts": 1,
        }
    }
    check(
        pack(submit)
        == bytes.fromhex(
            "81 a6 73 75 62 6d 69 74 86 a2 69 64 07 a4 74 61 73 6b a4 65 63 68 6f a4 61 72 67 73"
            " 92 a5 68 65 6c 6c 6f 2a a8 70 72 69 6f 72 69 74 79 a4 68 69 67 68 aa 74 69 6d 65"
            " 6f 75 74 5f 6d 73 cd 13 88 a8 61 74 74 65 6d 70 74 73 01"
        ),
        "worked example 9.1 does not encode as documented",
    )
    master = master_key(b"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n")
    check(
        master.hex() == "a02f57480d6b890eb8c96dfb6da079f2b40743a2b0a634100fb59f67320b0466",
        "master key of 9.2",
    )
    i2r, r2i = session_keys(master, bytes(range(32)), bytes(range(32, 64)))
    check(i2r.hex() == "5a97979d2b4cf4d280e78841311c17a3d1fce05218efc62bd7c6b5f7b6ccc6c2", "k_i2r of 9.2")
    check(r2i.hex() == "0e1d311df0378ca56e6f38a6ad1559056b9e46c8c19a6353bbdb50db1c7dfa75", "k_r2i of 9.2")
    plain = pack({"auth": {"version": 1, "role": "client", "agent": "example/1"}})
    body = struct.pack(">Q", 0) + AESGCM(i2r).encrypt(gcm_nonce(0), plain, None)
    frame = struct.pack(">I", len(body)) + body
    check(
        frame.hex()
        == "000000440000000000000000"
        "1ad3a27babceec405e1a244adebb14e9bc96cde7bfdc72eea0abe0884b75383e517029420df841513a0bba83c285edf5a5823b196cf55f70fe454f39",
        "sealed auth frame of 9.2",
    )


# --- 2. client ----------------------------------------------------------------

ECHO_ARGS = {
    "text": "héllo wörld ✓",
    "ints": [0, 1, -1, 127, 128, 65535, 2**32, 2**64 - 1, -(2**63)],
    "float": 1.5,
    "flags": [True, False, None],
    "bytes": b"\x00\x01\xfe\xff",
    "nested": {"a": [{"b": {}}], "empty": []},
    "ext": msgpack.ExtType(5, b"xy"),
    7: "integer key",
}


def expect_reply(msg, want_id):
    name, fields = one_entry(msg)
    check(name == "reply", f"expected reply, got {name}: {fields!r}")
    check(fields.get("id") == want_id, f"reply id {fields.get('id')}, expected {want_id}")
    return one_entry(fields.get("outcome"))


def run_client(addr, master):
    c = Connection(addr, master, "client")
    say(f"client: handshake done, manager is {c.peer_agent!r}")

    # Two submits in flight at once; answers are matched by id.
    c.send({"submit": {"id": 101, "task": "echo", "args": ECHO_ARGS}})
    c.send(
        {
            "submit": {
                "id": 102,
                "task": "echo",
                "args": "second",
                "priority": "low",
                "timeout_ms": 10000,
                "attempts": 2,
            }
        }
    )
    answers = {}
    for _ in range(2):
        name, fields = one_entry(c.recv())
        check(name == "reply", f"expected reply, got {name}")
        answers[fields.get("id")] = one_entry(fields.get("outcome"))
    check(sorted(answers) == [101, 102], f"reply ids {sorted(answers)}, expected [101, 102]")
    for rid, want in ((101, ECHO_ARGS), (102, "second")):
        kind, fields = answers[rid]
        check(kind == "done", f"echo {rid}: outcome {kind} {fields!r}")
        check(fields.get("value") == want, f"echo {rid} returned {fields.get('value')!r}, sent {want!r}")
    say("client: echo returned its arguments unchanged (2 submits in flight)")

    # A task no worker provides: failed at once.
    c.send({"submit": {"id": 103, "task": "no_such_task"}})
    kind, fields = expect_reply(c.recv(), 103)
    check(kind == "failed", f"unknown task: outcome {kind}")
    check(
        "no worker provides task no_such_task" in fields.get("error", ""),
        f"unknown task error {fields.get('error')!r}",
    )
    say(f"client: unknown task failed: {fields['error']!r}")

    # Ping.
    c.send({"ping": {"id": 2**64 - 1}})
    name, fields = one_entry(c.recv())
    check(name == "pong" and fields.get("id") == 2**64 - 1, f"expected pong, got {name} {fields!r}")
    say("client: ping answered")

    # Status, every documented field with its type.
    status = request_status(c, 104)
    check(status["workers"] >= 1, "status shows no worker")
    echo_workers = [w for w in status["worker_list"] if "echo" in w["tasks"]]
    check(echo_workers, f"no worker provides echo in {status['worker_list']!r}")
    check(status["completed"] >= 2, f"completed is {status['completed']}, expected >= 2")
    say(f"client: status has {status['workers']} worker(s), capacity {status['capacity']}")
    return c


STATUS_FIELDS = {
    "workers": int,
    "capacity": int,
    "in_flight": int,
    "queued": int,
    "queue_limit": int,
    "queued_by_priority": dict,
    "avg_task_ms": float,
    "completed": int,
    "denied": int,
    "worker_list": list,
    "worker_list_total": int,
    "worker_list_truncated": bool,
}
WORKER_FIELDS = {
    "id": int,
    "address": str,
    "capacity": int,
    "in_flight": int,
    "avg_ms": float,
    "tasks": list,
    "eval": bool,
    "draining": bool,
    "tasks_total": int,
}


def request_status(c, rid):
    c.send({"status_request": {"id": rid}})
    name, fields = one_entry(c.recv())
    check(name == "status", f"expected status, got {name}")
    check(fields.get("id") == rid, f"status id {fields.get('id')}, expected {rid}")
    status = fields.get("status")
    check(isinstance(status, dict), "status is not a map")
    for key, typ in STATUS_FIELDS.items():
        check(isinstance(status.get(key), typ), f"status.{key} is {status.get(key)!r}, want {typ.__name__}")
    for key in ("high", "normal", "low"):
        check(isinstance(status["queued_by_priority"].get(key), int), f"queued_by_priority.{key}")
    for w in status["worker_list"]:
        for key, typ in WORKER_FIELDS.items():
            check(isinstance(w.get(key), typ), f"worker_list[].{key} is {w.get(key)!r}, want {typ.__name__}")
    return status


# --- 3. wrong key, 4. protocol violation --------------------------------------


def run_wrong_key(addr):
    try:
        c = Connection(addr, master_key(b"not the cluster's key, but long enough"), "client")
    except WrongKey:
        say("wrong key: the manager's auth frame did not open, as documented")
        return
    c.close()
    raise Mismatch("a wrong key completed the handshake")


def run_violation(addr, master):
    c = Connection(addr, master, "client")
    c.send({"drain": {}})
    name, fields = one_entry(c.recv())
    check(name == "error", f"after a client's drain: {name} {fields!r}, expected error")
    check(fields.get("message") == "a client may not send drain", f"error message {fields.get('message')!r}")
    try:
        extra = c.recv()
    except (Closed, ConnectionResetError):
        say(f"violation: manager said {fields['message']!r} and closed")
        return
    finally:
        c.close()
    raise Mismatch(f"the manager kept the connection open after error: {extra!r}")


# --- 5. worker ----------------------------------------------------------------


def py_upper(args):
    if isinstance(args, str):
        return "done", {"value": args.upper()}
    return "failed", {"error": f"py_upper wants a string, got {type(args).__name__}"}


def run_worker(addr, master, client, serve, serve_timeout):
    w = Connection(addr, master, "worker")
    w.send({"register": {"capacity": 1, "tasks": ["py_upper"], "eval": False}})
    name, fields = one_entry(w.recv())
    check(name == "registered", f"after register: {name} {fields!r}")
    worker_id = fields.get("worker_id")
    check(isinstance(worker_id, int), f"worker_id {worker_id!r}")
    status = request_status(client, 105)
    mine = [x for x in status["worker_list"] if x["id"] == worker_id]
    check(mine, f"worker {worker_id} missing from status")
    check(mine[0]["tasks"] == ["py_upper"] and mine[0]["capacity"] == 1, f"status shows {mine[0]!r}")
    client.close()
    print(f"READY worker_id={worker_id}", flush=True)

    deadline = time.monotonic() + serve_timeout
    served = 0
    while served < serve:
        left = deadline - time.monotonic()
        check(left > 0, f"served {served} of {serve} tasks before the deadline")
        w.sock.settimeout(left)
        try:
            name, fields = one_entry(w.recv())
        except socket.timeout:
            raise Mismatch(f"served {served} of {serve} tasks before the deadline")
        check(name == "assign", f"worker got {name} {fields!r}, expected assign")
        check(fields.get("task") == "py_upper", f"assigned task {fields.get('task')!r}")
        check("args" in fields and "timeout_ms" in fields, f"assign fields {sorted(fields)}")
        kind, outcome = py_upper(fields["args"])
        check(fields.get("slot") == 0, f"a one-slot worker is assigned slot 0, got {fields.get('slot')!r}")
        w.send({"finished": {"run_id": fields["run_id"], "outcome": {kind: outcome}}})
        served += 1
        print(f"SERVED run_id={fields['run_id']} {kind}", flush=True)
    w.sock.settimeout(IO_TIMEOUT)
    w.send({"drain": {}})
    w.close()
    say(f"worker: served {served} task(s), drained and left")


def run_expect_refusal(addr, key_path):
    with open(key_path, "rb") as f:
        master = master_key(f.read())
    try:
        Connection(addr, master, "client").close()
    except AtLimit as e:
        say(f"refused as expected: {e}")
        say("argon_client.py: all checks passed")
        return 0
    except (Mismatch, WrongKey, Closed, InvalidTag, OSError, ValueError) as e:
        say(f"argon_client.py: FAILED: expected a refusal, got {type(e).__name__}: {e}")
        return 1
    say("argon_client.py: FAILED: the manager accepted the connection")
    return 1


def say(text):
    print(text, file=sys.stderr, flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mgr", required=True, help="manager address HOST:PORT")
    p.add_argument("--key", required=True, help="path of the cluster's key file")
    p.add_argument("--serve", type=int, default=2, help="py_upper tasks to serve as a worker (0: none)")
    p.add_argument("--serve-timeout", type=float, default=30.0, help="seconds to wait for them")
    p.add_argument("--expect-refusal", action="store_true", help="only check that a full manager refuses us")
    a = p.parse_args()
    if a.expect_refusal:
        return run_expect_refusal(a.mgr, a.key)
    try:
        self_test()
        say("self-test: PROTOCOL.md section 9 vectors match")
        with open(a.key, "rb") as f:
            master = master_key(f.read())
        client = run_client(a.mgr, master)
        run_wrong_key(a.mgr)
        run_violation(a.mgr, master)
        if a.serve > 0:
            run_worker(a.mgr, master, client, a.serve, a.serve_timeout)
        else:
            client.close()
    except (Mismatch, WrongKey, Closed, InvalidTag, OSError, ValueError) as e:
        say(f"argon_client.py: FAILED: {type(e).__name__}: {e}")
        return 1
    say("argon_client.py: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
