"""Helpers for the Smartshop Bus Protocol v1 conformance suite (docs/protocol.md).

Black-box: everything here speaks only the wire, through pyzmq (Debian's
python3-zmq) and the standard library. Every test uses names and msg_ids of
its own (uuid suffixes), so tests do not disturb each other on a shared
broker; every socket is closed with linger 0 when its test ends.
"""

import json
import os
import re
import time
import unittest
import uuid

import zmq

# The configurations a broker under test may have been started with, besides
# the default one (docs/protocol.md section 17). A test that needs one runs
# only when run.py is given --profile NAME; otherwise it is skipped.
PROFILES = {
    "limits": "small --max-peers, --max-names-per-peer and --max-services",
    "curve": "CURVE with the suite's allow list",
    "policy": "the suite's policy, fixtures/policy.lua",
    "lua": "the suite's hosted Lua services, fixtures/services/",
}


class Config:
    endpoint = "tcp://127.0.0.1:5555"
    scale = 1.0          # multiplies every wait (--time-scale)
    slow = False         # run the multi-second liveness tests (--slow)
    broker_pid = None    # enables D5 (--broker-pid)
    max_bytes = 1048576  # the broker's --max-message-bytes (E2 default)
    profiles = set()     # --profile: how the broker under test was configured
    max_peers = None     # profile limits: the broker's --max-peers,
    max_names = None     #   --max-names-per-peer
    max_services = None  #   and --max-services
    curve_server = None  # profile curve: the broker's public key (Z85 bytes)
    curve_keys = {}      #   client key pairs by name: {"alice": (public, secret)}
    curve_default = None #   the pair a Peer uses unless told otherwise


CONFIG = Config()
CTX = zmq.Context.instance()
SENT_IDS = set()   # every msg_id this process sent: used to ignore foreign broadcasts

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
TS_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
ERROR_KEYS = {"msg_id", "type", "src", "dst", "action", "correlation_id", "timestamp", "payload"}


def run_last(test):
    """Marks a test that may crash a non-conforming broker: run.py runs it
    after the others (before D5), so one failure does not take the rest."""
    test.run_last = True
    return test


def profile(name):
    """Marks a test that needs a broker configured as profile `name`: it runs
    only when run.py is given --profile NAME (and then only such tests run);
    otherwise it is skipped, naming its rule and the profile."""
    assert name in PROFILES, name

    def mark(test):
        rule = test.__name__.split("_")[1]
        test.profile = name
        return unittest.skipUnless(
            name in CONFIG.profiles,
            "%s: needs a broker configured for profile %s (%s); run with --profile %s"
            % (rule, name, PROFILES[name], name))(test)
    return mark


def read_key_file(path):
    """The one CURVE key (40 Z85 characters) in a file written by
    `smartshop-broker --keygen`: "# " starts a comment line."""
    with open(path, encoding="ascii") as f:
        for line in f:
            words = line.split()
            if not words or words[0] == "#":
                continue
            return words[0].encode("ascii")
    raise ValueError("%s: no CURVE key in it" % path)


def curve_key(text_or_path):
    """A Z85 key given as itself or as the path of a key file."""
    if len(text_or_path) == 40 and not os.path.exists(text_or_path):
        return text_or_path.encode("ascii")
    return read_key_file(text_or_path)


def t(seconds):
    """A wait, scaled by --time-scale."""
    return seconds * CONFIG.scale


def new_id():
    return str(uuid.uuid4())


def uname(role="p"):
    """A fresh valid name (N1) that no other test uses."""
    return "ct-%s-%s" % (role, uuid.uuid4().hex[:12])


def env(type_, src, dst=None, action=None, payload=None, correlation_id=None,
        msg_id=None, **extra):
    """An envelope as a dict; fields left None are omitted, extras kept."""
    m = {"msg_id": msg_id or new_id(), "type": type_, "src": src}
    if dst is not None:
        m["dst"] = dst
    if action is not None:
        m["action"] = action
    if payload is not None:
        m["payload"] = payload
    if correlation_id is not None:
        m["correlation_id"] = correlation_id
    m.update(extra)
    return m


def enc(m):
    return json.dumps(m, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _strict_pairs(pairs):
    keys = [k for k, _ in pairs]
    if len(keys) != len(set(keys)):
        raise ValueError("duplicate key in broker output: %r" % keys)
    return dict(pairs)


class Received:
    """One message as a peer received it: its frames, raw JSON and parsed dict."""

    def __init__(self, frames):
        self.frames = frames
        self.raw = frames[-1] if frames else b""
        try:
            self.msg = json.loads(self.raw.decode("utf-8"), object_pairs_hook=_strict_pairs)
        except (ValueError, UnicodeDecodeError) as e:
            self.msg = None
            self.parse_error = str(e)

    def __getitem__(self, k):
        return self.msg[k]

    def get(self, k, d=None):
        return self.msg.get(k, d) if isinstance(self.msg, dict) else d

    def __repr__(self):
        return "Received(%r)" % (self.frames,)


class Peer:
    """One DEALER connection to the broker.

    shape 2 sends [json]; shape 3 sends ["", json] (F1).
    key (profile curve): None for the default client key pair, the name of a
    pair in --curve-client-keys ("alice"), a (public, secret) pair, or False
    for no CURVE at all.
    """

    def __init__(self, name=None, shape=2, identity=None, rcvhwm=None, sndhwm=None,
                 socket_type=zmq.DEALER, key=None):
        self.name = name
        self.shape = shape
        self.held = set()    # names this connection registered (kept by BusTest.register)
        self.sock = CTX.socket(socket_type)
        self.sock.setsockopt(zmq.LINGER, 0)
        if key is None:
            key = CONFIG.curve_default
        if isinstance(key, str):
            key = CONFIG.curve_keys[key]
        if key:
            self.sock.curve_serverkey = CONFIG.curve_server
            self.sock.curve_publickey, self.sock.curve_secretkey = key
        if identity is not None:
            self.sock.setsockopt(zmq.IDENTITY, identity)
        if rcvhwm is not None:
            self.sock.setsockopt(zmq.RCVHWM, rcvhwm)
        if sndhwm is not None:
            self.sock.setsockopt(zmq.SNDHWM, sndhwm)
        self.sock.connect(CONFIG.endpoint)
        self.poller = zmq.Poller()
        self.poller.register(self.sock, zmq.POLLIN)

    def close(self):
        if self.sock is not None:
            self.sock.close(linger=0)
            self.sock = None

    # sending
    def send_frames(self, frames):
        self.sock.send_multipart(frames)

    def send_bytes(self, data, shape=None):
        shape = shape or self.shape
        self.send_frames([data] if shape == 2 else [b"", data])

    def send(self, m, shape=None):
        """Send an envelope (dict) and return it."""
        if isinstance(m, dict) and isinstance(m.get("msg_id"), str):
            SENT_IDS.add(m["msg_id"])
        self.send_bytes(enc(m), shape)
        return m

    def src(self):
        """A src this connection may use (S1/S2): a name it holds, else its
        own name, else a fresh one."""
        if self.held:
            return min(self.held)
        return self.name or uname("c")

    # receiving
    def recv(self, timeout=1.0):
        """The next message within timeout seconds (scaled), or None.

        Broadcast events this process did not send are skipped: they come
        from other users of a shared broker.
        """
        deadline = time.monotonic() + t(timeout)
        while True:
            left = max(0.0, deadline - time.monotonic())
            if not self.poller.poll(int(left * 1000)):
                return None
            r = Received(self.sock.recv_multipart())
            m = r.msg
            if (isinstance(m, dict) and m.get("type") == "event"
                    and m.get("dst") == "broadcast" and m.get("msg_id") not in SENT_IDS):
                continue
            return r


class BusTest(unittest.TestCase):
    """Base class: peers made with self.peer() are closed after the test."""

    def peer(self, name=None, shape=2, **kw):
        p = Peer(name=name, shape=shape, **kw)
        self.addCleanup(p.close)
        return p

    # receiving with assertions
    def expect(self, p, timeout=1.0, what="a message"):
        r = p.recv(timeout)
        if r is None:
            self.fail("timed out after %.2fs waiting for %s" % (t(timeout), what))
        self.assertIsNotNone(r.msg, "last frame is not JSON: %r" % (r.frames,))
        self.assertIsInstance(r.msg, dict)
        return r

    def expect_nothing(self, p, timeout=0.3, what="nothing"):
        r = p.recv(timeout)
        if r is not None:
            self.fail("expected %s, got %r" % (what, r.frames))

    def expect_nothing_all(self, peers, timeout=0.2, what="nothing"):
        """None of peers receives anything within timeout (one shared wait)."""
        time.sleep(t(timeout))
        for p in peers:
            r = p.recv(0)
            if r is not None:
                self.fail("expected %s, got %r" % (what, r.frames))

    def expect_error(self, p, code, corr=Ellipsis, timeout=1.0):
        """Receive a broker error with this code; corr=... means any."""
        r = self.expect(p, timeout, "error %s" % code)
        m = r.msg
        self.assertEqual(m.get("type"), "error", "expected error %s, got %s" % (code, r.raw))
        self.assertEqual(m.get("src"), "broker", r.raw)
        self.assertIsInstance(m.get("payload"), dict, r.raw)
        self.assertEqual(m["payload"].get("code"), code, "expected %s, got %s" % (code, r.raw))
        self.assertIsInstance(m["payload"].get("message"), str, r.raw)
        if corr is not Ellipsis:
            self.assertIn("correlation_id", m, r.raw)
            self.assertEqual(m["correlation_id"], corr, "correlation_id in %s" % r.raw)
        return r

    def expect_response(self, p, corr, action=None, timeout=1.0):
        r = self.expect(p, timeout, "response to %s" % corr)
        self.assertEqual(r.get("type"), "response", r.raw)
        self.assertEqual(r.get("correlation_id"), corr, r.raw)
        if action is not None:
            self.assertEqual(r.get("action"), action, r.raw)
        return r

    # common exchanges
    def register(self, p, name=None, shape=None):
        name = name or p.name
        m = p.send(env("register", name, "broker", "register", {}), shape)
        r = self.expect_response(p, m["msg_id"], "register")
        self.assertEqual(r["payload"].get("status"), "ok", r.raw)
        p.held.add(name)
        return r

    def unregister(self, p, name):
        m = p.send(env("unregister", name, "broker", "unregister", {}))
        r = self.expect_response(p, m["msg_id"], "unregister")
        self.assertEqual(r["payload"].get("status"), "ok", r.raw)
        p.held.discard(name)
        return r

    def call_broker(self, p, action, src=None, payload=None, shape=None):
        src = src or p.src()
        m = p.send(env("request", src, "broker", action, payload), shape)
        return self.expect_response(p, m["msg_id"], action)

    def ping(self, p, src=None):
        """The set of names the broker says p's connection holds (B1)."""
        r = self.call_broker(p, "ping", src)
        self.assertEqual(r["payload"].get("status"), "ok", r.raw)
        return set(r["payload"]["registered"])

    def stats(self, p):
        return self.call_broker(p, "stats")["payload"]

    def list_services(self, p):
        return self.call_broker(p, "list_services")["payload"]["services"]

    def instances(self, p, name):
        for s in self.list_services(p):
            if s["name"] == name:
                return s["instances"]
        return 0

    def dead_letters(self, p, limit=None):
        """The dead_letters answer's payload (B2)."""
        r = self.call_broker(p, "dead_letters", payload=None if limit is None else {"limit": limit})
        self.assertEqual(r["payload"].get("status"), "ok", r.raw)
        return r["payload"]

    def find_letter(self, p, msg_id, code=None, limit=100):
        """The newest letter with this msg_id (and code), or None."""
        for d in self.dead_letters(p, limit)["dead_letters"]:
            if d.get("msg_id") == msg_id and (code is None or d.get("code") == code):
                return d
        return None

    def replay(self, p, letter_id):
        """The replay answer's payload (B2)."""
        return self.call_broker(p, "replay", payload={"id": letter_id})["payload"]

    def wait_until(self, cond, timeout=2.0, step=0.05):
        deadline = time.monotonic() + t(timeout)
        while True:
            if cond():
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(step)

    def assert_alive(self):
        """The broker still answers (after malformed input: 'never a crash')."""
        c = self.peer()
        self.call_broker(c, "ping", uname("alive"))

    def service_and_client(self, svc_shape=2, cli_shape=2):
        svc = self.peer(uname("svc"), svc_shape)
        self.register(svc)
        cli = self.peer(uname("cli"), cli_shape)
        return svc, cli

    def send_request(self, cli, svc, action="work", **extra):
        """cli sends a request to svc's name; svc receives it. Returns (sent, received)."""
        m = cli.send(env("request", cli.name, svc.name, action, {"n": 1}, **extra))
        r = self.expect(svc, what="the request at the service")
        self.assertEqual(r.get("msg_id"), m["msg_id"], r.raw)
        return m, r

    def answer(self, svc, req, type_="response", src=None, dst=None, **extra):
        return svc.send(env(type_, src or svc.name, dst or req["src"], req.get("action"),
                            {"ok": True}, correlation_id=req["msg_id"], **extra))
