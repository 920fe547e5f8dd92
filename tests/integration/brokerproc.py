"""Integration-test fixture: the real smartshop-broker binary and real ZeroMQ peers.

Broker   starts build/smartshop-broker (or $SMARTSHOP_BROKER) on a free
         loopback TCP port, waits until it is ready, captures its stderr to a
         file, and stops it with SIGTERM (SIGKILL after 5 s).
Peer     a DEALER socket (identity optional, linger 0) that speaks the
         protocol: send(dict|bytes|frames, delimiter=False), recv(timeout),
         register(name), call_broker(action), ...

BrokerTestCase  a unittest.TestCase with one broker per class (BROKER_ARGS),
         peers closed after each test, assertError/expectError for the
         broker's error messages (docs/protocol.md T6); at the end the broker
         must still be running and must stop with exit code 0.
LuaServicesTestCase  a BrokerTestCase hosting copies of SERVICE_FILES in a
         temp --services directory (no policy); services_dir(files) makes one.
PolicyTestCase  a BrokerTestCase running POLICY from a temp policy.lua;
         policy_dir(text) makes such a directory.
FreshBrokerTestCase  a BrokerTestCase with a broker per test (self.b) in
         place of the class's one.

Each tests/integration/test_*.py runs alone:
    /usr/bin/python3 tests/integration/test_register.py
with $SMARTSHOP_BROKER naming the binary when it is not build/smartshop-broker.
Everything here uses the stdlib and pyzmq only; run with /usr/bin/python3.
"""
import atexit
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import uuid

import zmq

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(os.path.dirname(HERE))
EXAMPLES = os.path.join(REPO_ROOT, "examples", "python")
SERVICES_DIR = os.path.join(REPO_ROOT, "services")                 # the shipped Lua services
LUA_FIXTURES = os.path.join(REPO_ROOT, "tests", "lua_services")    # Lua services for tests
if EXAMPLES not in sys.path:
    sys.path.insert(0, EXAMPLES)

from core.message import build_message, dumps, loads  # noqa: E402,F401

PYTHON = "/usr/bin/python3"
# Sanitizer builds run several times slower: time bounds in tests scale by this.
SLOW = 4.0 if os.environ.get("SMARTSHOP_SANITIZED") == "1" else 1.0
DEFAULT_TIMEOUT = 2.0
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
TIMESTAMP_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
READY_RE = re.compile(r"\bready\b", re.IGNORECASE)  # not "already"
LOG_LINE_RE = re.compile(r"^\S+ +(ERROR|WARN|INFO|DEBUG) +\S.*$")


def broker_path():
    """The broker binary: $SMARTSHOP_BROKER, else build/smartshop-broker in the repo.

    A relative $SMARTSHOP_BROKER is taken from the current directory if it
    exists there, else from the repository root.
    """
    env = os.environ.get("SMARTSHOP_BROKER")
    if env:
        if os.path.isabs(env) or os.path.exists(env):
            return os.path.abspath(env)
        return os.path.join(REPO_ROOT, env)
    return os.path.join(REPO_ROOT, "build", "smartshop-broker")


_ports_given = set()


def free_port():
    """A loopback TCP port nobody listens on right now, and not one this
    process was given before: the kernel may hand the port it just freed
    out again, and two calls in a row (--endpoint, --metrics) would then
    name the same one."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _ports_given:
            _ports_given.add(port)
            return port
    raise AssertionError("no loopback port that was not given out already")


def port_accepts(port, host="127.0.0.1"):
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def new_id(prefix="t"):
    return "%s-%s" % (prefix, uuid.uuid4())


def msg(type, src, dst=None, action=None, payload=None, correlation_id=None, **extra):
    """A message dict like core.message.build_message, plus any extra top-level keys."""
    m = build_message(type, src, dst, action, payload=payload, correlation_id=correlation_id)
    m.update(extra)
    return m


def run_broker_cli(args, timeout=5, cwd=None):
    """Run the broker binary to completion (for --help, bad flags, ...).

    Returns a CompletedProcess with text stdout/stderr. A broker that does not
    exit within `timeout` seconds is killed and an AssertionError raised.
    """
    path = broker_path()
    if not os.path.exists(path):
        raise AssertionError("broker binary not found: %s (build it, or set SMARTSHOP_BROKER)" % path)
    proc = subprocess.Popen([path] + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, cwd=cwd or REPO_ROOT)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError("broker %s did not exit within %s s; stderr:\n%s"
                             % (args, timeout, err.decode("utf-8", "replace")))
    return subprocess.CompletedProcess(proc.args, proc.returncode,
                                       out.decode("utf-8", "replace"),
                                       err.decode("utf-8", "replace"))


def read_key(path):
    """The key in a key file --keygen wrote (its first line that is not a comment)."""
    with open(path) as f:
        return [line.strip() for line in f if line.strip() and not line.startswith("#")][0]


def keygen(prefix):
    """A CURVE key pair made by the broker's --keygen: (public, secret) Z85 text."""
    out = subprocess.run([broker_path(), "--keygen", prefix], capture_output=True, text=True,
                         timeout=5)
    assert out.returncode == 0, out.stderr
    return read_key(prefix + ".pub"), read_key(prefix + ".key")


_STARTED = []  # every Broker started by this process


@atexit.register
def _kill_leftover_brokers():
    """A test that failed before stopping its broker must not leave it running."""
    for b in _STARTED:
        if b.proc.poll() is None:
            b.proc.kill()
            b.proc.wait()


class Broker:
    """One running smartshop-broker process.

    By default it binds tcp://127.0.0.1:<free port> and runs the core alone
    (--policy "" --services ""), so no Lua policy or Lua service takes part.
    `args` are appended to the command line. With endpoint=False no
    --endpoint flag is passed (a config file supplies it); give `port` so
    readiness can also be detected by the port accepting.
    """

    def __init__(self, args=(), endpoint=None, port=None, core_only=True, log_level=None,
                 ready_timeout=10.0, cwd=None, state_dir=None):
        self.path = broker_path()
        if not os.path.exists(self.path):
            raise AssertionError("broker binary not found: %s (build it, or set SMARTSHOP_BROKER)"
                                 % self.path)
        if endpoint is None:
            port = port or free_port()
            endpoint = "tcp://127.0.0.1:%d" % port
        self.port = port
        self.endpoint = endpoint or None
        cmd = [self.path]
        if self.endpoint:
            cmd += ["--endpoint", self.endpoint]
        if core_only:
            cmd += ["--policy", "", "--services", ""]
        if log_level:
            cmd += ["--log-level", log_level]
        # Each broker keeps its state (state.h) in a directory of its own,
        # so that no test restores another's registrations; a test that
        # restarts a broker passes the same state_dir to both.
        self._own_state = None
        if state_dir is None and "--state-dir" not in args:
            state_dir = self._own_state = tempfile.mkdtemp(prefix="smartshop-state-")
        if state_dir is not None:
            cmd += ["--state-dir", state_dir]
        self.state_dir = state_dir
        cmd += list(args)
        self.cmd = cmd
        fd, self.log_path = tempfile.mkstemp(prefix="smartshop-broker-", suffix=".log")
        self._log_file = os.fdopen(fd, "wb")
        self.proc = subprocess.Popen(cmd, stdout=self._log_file, stderr=self._log_file,
                                     stdin=subprocess.DEVNULL, cwd=cwd or REPO_ROOT)
        _STARTED.append(self)
        self.returncode = None
        self._wait_ready(ready_timeout)

    # -- lifecycle -------------------------------------------------------

    def _wait_ready(self, timeout):
        start = time.monotonic()
        deadline = start + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("broker exited with %s before it was ready: %s\n%s"
                                     % (self.proc.returncode, self.cmd, self.log_text()))
            if READY_RE.search(self.log_text()):
                return
            # No "ready" line yet (a quiet --log-level?): after a grace period a
            # port that takes connections will do.
            if self.port and time.monotonic() - start > 0.5 and port_accepts(self.port):
                return
            time.sleep(0.02)
        self.kill()
        raise AssertionError("broker not ready within %s s: %s\n%s"
                             % (timeout, self.cmd, self.log_text()))

    def alive(self):
        return self.proc.poll() is None

    def send_signal(self, signum):
        self.proc.send_signal(signum)

    def wait(self, timeout=5.0):
        """Wait for the process to exit; return its exit code (None if still running)."""
        try:
            self.returncode = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        return self.returncode

    def stop(self, signum=signal.SIGTERM, timeout=5.0):
        """Signal the broker (SIGTERM), SIGKILL it after `timeout` s; return the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signum)
            if self.wait(timeout) is None:
                self.proc.kill()
                self.proc.wait()
        self.returncode = self.proc.returncode
        if not self._log_file.closed:
            self._log_file.close()
        return self.returncode

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if not self._log_file.closed:
            self._log_file.close()

    def cleanup(self):
        self.stop()
        try:
            os.unlink(self.log_path)
        except OSError:
            pass
        if self._own_state:
            shutil.rmtree(self._own_state, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.cleanup()

    # -- the log ---------------------------------------------------------

    def log_text(self):
        """Everything the broker wrote to stderr (and stdout) so far."""
        try:
            if not self._log_file.closed:
                self._log_file.flush()
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def log_lines(self):
        return [l for l in self.log_text().splitlines() if l.strip()]

    def wait_for_log(self, pattern, timeout=3.0, start=0):
        """Wait until the log (from character `start`) matches regex `pattern`; return the match."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            m = rx.search(self.log_text()[start:])
            if m or time.monotonic() >= deadline:
                return m
            time.sleep(0.02)

    # -- peers -----------------------------------------------------------

    def peer(self, identity=None, **kw):
        return Peer(self.endpoint, identity=identity, **kw)


_CTX = None


def context():
    global _CTX
    if _CTX is None:
        _CTX = zmq.Context()
    return _CTX


class Peer:
    """A DEALER (or REQ, with sock_type) connected to the broker.

    send(m, delimiter=False): m is a dict (encoded with core.message.dumps),
      bytes/str (one raw data frame) or a list of frames (sent as they are).
      delimiter=True puts an empty frame first (the 3-frame shape at the broker).
    recv(timeout) -> (frames, dict): the dict is the JSON of the last frame.
    """

    def __init__(self, endpoint, identity=None, sock_type=zmq.DEALER, name=None, options=None):
        self.endpoint = endpoint
        self.sock = context().socket(sock_type)
        self.sock.setsockopt(zmq.LINGER, 0)
        for opt, value in (options or {}).items():  # e.g. {zmq.RCVHWM: 1}
            self.sock.setsockopt(opt, value)
        if identity is not None:
            self.sock.setsockopt(zmq.IDENTITY,
                                 identity.encode() if isinstance(identity, str) else identity)
        self.sock.connect(endpoint)
        self.name = name  # the src we use by default
        self.closed = False

    def close(self):
        if not self.closed:
            self.sock.close(0)
            self.closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- raw I/O ---------------------------------------------------------

    def send(self, m, delimiter=False):
        """Send a message; return the dict sent (or None for raw bytes/frames)."""
        if isinstance(m, dict):
            frames = [dumps(m)]
        elif isinstance(m, str):
            frames = [m.encode("utf-8")]
        elif isinstance(m, (bytes, bytearray)):
            frames = [bytes(m)]
        else:
            frames = [f.encode("utf-8") if isinstance(f, str) else bytes(f) for f in m]
        if delimiter:
            frames = [b""] + frames
        self.sock.send_multipart(frames)
        return m if isinstance(m, dict) else None

    def recv_raw(self, timeout=DEFAULT_TIMEOUT):
        """The next multipart message's frames, or None after `timeout` seconds."""
        if self.sock.poll(int(timeout * 1000), zmq.POLLIN):
            return self.sock.recv_multipart()
        return None

    def recv(self, timeout=DEFAULT_TIMEOUT):
        """(frames, dict) of the next message; AssertionError after `timeout` seconds."""
        frames = self.recv_raw(timeout)
        if frames is None:
            raise AssertionError("peer %s: nothing received within %.1f s"
                                 % (self.name or "?", timeout))
        try:
            body = loads(frames[-1])
        except ValueError as exc:
            raise AssertionError("peer %s received a last frame that is not JSON (%s): %r"
                                 % (self.name or "?", exc, frames))
        return frames, body

    def recv_until(self, pred, timeout=DEFAULT_TIMEOUT):
        """Receive until pred(dict) is true; return (frames, dict, skipped dicts)."""
        deadline = time.monotonic() + timeout
        skipped = []
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("peer %s: wanted message not received within %.1f s; got %r"
                                     % (self.name or "?", timeout, skipped))
            frames, body = self.recv(left)
            if pred(body):
                return frames, body, skipped
            skipped.append(body)

    def recv_answer(self, msg_id, timeout=DEFAULT_TIMEOUT):
        """The next message whose correlation_id is msg_id (others are skipped)."""
        return self.recv_until(lambda b: b.get("correlation_id") == msg_id, timeout)[:2]

    def expect_nothing(self, timeout=0.3):
        """Assert that nothing arrives for `timeout` seconds."""
        frames = self.recv_raw(timeout)
        if frames is not None:
            raise AssertionError("peer %s: expected nothing, got %r" % (self.name or "?", frames))

    def drain(self, timeout=0.05):
        out = []
        while True:
            frames = self.recv_raw(timeout)
            if frames is None:
                return out
            out.append(frames)

    # -- protocol helpers ------------------------------------------------

    def register(self, name, delimiter=False, timeout=DEFAULT_TIMEOUT):
        """Register `name`; return the broker's response dict (asserted ok)."""
        m = self.send(msg("register", name, "broker", "register"), delimiter=delimiter)
        _, body = self.recv_answer(m["msg_id"], timeout)
        if body.get("type") != "response" or (body.get("payload") or {}).get("status") != "ok":
            raise AssertionError("register %s failed: %r" % (name, body))
        if self.name is None:
            self.name = name
        return body

    def unregister(self, name, timeout=DEFAULT_TIMEOUT):
        m = self.send(msg("unregister", name, "broker", "unregister"))
        return self.recv_answer(m["msg_id"], timeout)[1]

    def call_broker(self, action, payload=None, src=None, delimiter=False,
                    timeout=DEFAULT_TIMEOUT):
        """A request to the broker's own service; return the answer dict."""
        m = self.send(msg("request", src or self.name or "test-client", "broker", action,
                          payload=payload), delimiter=delimiter)
        return self.recv_answer(m["msg_id"], timeout)[1]

    def request(self, dst, action="do", payload=None, src=None, delimiter=False, **extra):
        """Send a request; return the dict sent."""
        return self.send(msg("request", src or self.name or "test-client", dst, action,
                             payload=payload, **extra), delimiter=delimiter)

    def answer(self, request, payload=None, src=None, type="response", **extra):
        """Answer a request dict as a service would; return the dict sent."""
        return self.send(msg(type, src or self.name, request.get("src"), request.get("action"),
                             payload=payload, correlation_id=request["msg_id"], **extra))


def services(peer):
    """{name: instances} from the broker's list_services."""
    body = peer.call_broker("list_services")
    if body.get("type") != "response":
        raise AssertionError("list_services failed: %s" % dump(body))
    return {s["name"]: s["instances"] for s in body["payload"]["services"]}


def error_code(body):
    """The error code of an error message (None if it is not an error)."""
    if body.get("type") != "error":
        return None
    return (body.get("payload") or {}).get("code")


def wait_until(pred, timeout=2.0, interval=0.05):
    """Poll pred() until true or timeout; return its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


def cpu_seconds(pid, tid=None):
    """User plus system CPU time so far of process `pid`, or of its thread
    `tid` (/proc/PID/stat, /proc/PID/task/TID/stat)."""
    path = "/proc/%d/stat" % pid if tid is None else "/proc/%d/task/%d/stat" % (pid, tid)
    with open(path) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def python_env(endpoint):
    """Environment for the example scripts: our endpoint, unbuffered output."""
    env = dict(os.environ)
    env["SMARTSHOP_ENDPOINT"] = endpoint
    env["PYTHONUNBUFFERED"] = "1"
    return env


def dump(body):
    return json.dumps(body, sort_keys=True)


class BrokerTestCase(unittest.TestCase):
    """One broker for the whole class; peers made with self.peer() close after each test.

    Subclasses may set BROKER_ARGS (extra command-line arguments). At the end
    the broker must still be running (no crash) and stop with exit code 0.
    """

    BROKER_ARGS = ()
    broker = None

    @classmethod
    def setUpClass(cls):
        cls.broker = Broker(args=cls.BROKER_ARGS)

    @classmethod
    def tearDownClass(cls):
        b = cls.broker
        if b is None:
            return
        was_alive = b.alive()
        code = b.stop()
        log = b.log_text()
        try:
            os.unlink(b.log_path)
        except OSError:
            pass
        if not was_alive:
            raise AssertionError("broker died during the tests (exit %s); log:\n%s" % (code, log))
        if code != 0:
            raise AssertionError("broker stopped with exit %s, not 0; log:\n%s" % (code, log))

    def setUp(self):
        self._peers = []

    def tearDown(self):
        for p in self._peers:
            p.close()

    def peer(self, identity=None, name=None, register=None, **kw):
        """A new peer; register=<name> registers it first."""
        p = self.broker.peer(identity=identity, name=name, **kw)
        self._peers.append(p)
        if register:
            p.register(register)
        return p

    def curve_peer(self, keys, identity=None):
        """A peer with CURVE keys (public, secret) against a broker whose
        public key the class keeps as `broker_pub`."""
        public, secret = keys
        return self.peer(identity=identity, options={
            zmq.CURVE_SERVERKEY: self.broker_pub.encode(), zmq.CURVE_PUBLICKEY: public.encode(),
            zmq.CURVE_SECRETKEY: secret.encode()})

    def assertAlive(self):
        self.assertTrue(self.broker.alive(), "broker died; log:\n" + self.broker.log_text())

    def assertError(self, body, code, correlation_id="any", dst="any", action="any"):
        """Assert `body` is a broker error with `code` (and the given fields, unless "any")."""
        self.assertEqual(body.get("type"), "error", "expected error %s, got %s" % (code, dump(body)))
        self.assertEqual(error_code(body), code, "expected error %s, got %s" % (code, dump(body)))
        self.assertEqual(body.get("src"), "broker", dump(body))
        self.assertIsInstance((body.get("payload") or {}).get("message"), str, dump(body))
        self.assertRegex(body.get("msg_id", ""), UUID_RE, dump(body))
        self.assertRegex(body.get("timestamp") or "", TIMESTAMP_RE, dump(body))
        if correlation_id != "any":
            self.assertEqual(body.get("correlation_id"), correlation_id, dump(body))
        if dst != "any":
            self.assertEqual(body.get("dst"), dst, dump(body))
        if action != "any":
            self.assertEqual(body.get("action"), action, dump(body))

    def expectError(self, p, code, correlation_id="any", timeout=DEFAULT_TIMEOUT, **kw):
        """Receive the next message on peer p and assert it is error `code`; return it."""
        _, body = p.recv(timeout)
        self.assertError(body, code, correlation_id=correlation_id, **kw)
        return body


def services_dir(files):
    """A temp directory holding copies of `files` ({name in dir: source path})."""
    d = tempfile.mkdtemp(prefix="smartshop-lua-")
    for name, src in files.items():
        shutil.copy(src, os.path.join(d, name))
    return d


class LuaServicesTestCase(BrokerTestCase):
    """A BrokerTestCase whose broker hosts Lua services and runs no policy.

    SERVICE_FILES ({name in dir: source path}) are copied into a temp
    directory, cls.dir, which the broker gets as --services; EXTRA_ARGS are
    appended to its command line. cls.dir is removed after the class.
    """

    SERVICE_FILES = {}
    EXTRA_ARGS = ()

    @classmethod
    def make_services_dir(cls):
        """The services directory for this class (override to add more)."""
        return services_dir(cls.SERVICE_FILES)

    @classmethod
    def setUpClass(cls):
        cls.dir = cls.make_services_dir()
        cls.BROKER_ARGS = ("--policy", "", "--services", cls.dir) + tuple(cls.EXTRA_ARGS)
        super().setUpClass()

    @classmethod
    def tearDownClass(cls):
        try:
            super().tearDownClass()
        finally:
            shutil.rmtree(cls.dir, ignore_errors=True)


def policy_dir(text=None, name="policy.lua"):
    """A temp directory for a policy; with `text`, the file `name` in it holds it.

    Returns (directory, path of the policy file)."""
    d = tempfile.mkdtemp(prefix="smartshop-policy-")
    path = os.path.join(d, name)
    if text is not None:
        with open(path, "w") as f:
            f.write(text)
    return d, path


class PolicyTestCase(BrokerTestCase):
    """A BrokerTestCase whose broker runs the policy POLICY (--policy on
    cls.policy, a policy.lua in the temp directory cls.tmp) with EXTRA_ARGS.
    Override policy_text() to build the text (cls.tmp exists by then).
    cls.tmp is removed after the class.
    """

    POLICY = None
    EXTRA_ARGS = ()

    @classmethod
    def policy_text(cls):
        return cls.POLICY

    @classmethod
    def setUpClass(cls):
        cls.tmp, cls.policy = policy_dir()
        with open(cls.policy, "w") as f:
            f.write(cls.policy_text())
        cls.BROKER_ARGS = ("--policy", cls.policy) + tuple(cls.EXTRA_ARGS)
        super().setUpClass()

    @classmethod
    def tearDownClass(cls):
        try:
            super().tearDownClass()
        finally:
            shutil.rmtree(cls.tmp, ignore_errors=True)


class FreshBrokerTestCase(BrokerTestCase):
    """No broker for the class: each test starts its own as self.b (in setUp),
    and self.peer() connects to it. After each test self.b must still be
    running and must stop with exit code 0.
    """

    b = None

    @classmethod
    def setUpClass(cls):
        pass

    @classmethod
    def tearDownClass(cls):
        pass

    def tearDown(self):
        super().tearDown()
        try:
            self.assertTrue(self.b.alive(), "broker died:\n" + self.b.log_text())
            self.assertEqual(self.b.stop(), 0, self.b.log_text())
        finally:
            self.b.cleanup()

    def peer(self, identity=None, name=None, register=None, **kw):
        p = self.b.peer(identity=identity, name=name, **kw)
        self._peers.append(p)
        if register:
            p.register(register)
        return p


def main():
    """Run the calling module's tests; exit non-zero on failure."""
    unittest.main(module="__main__", verbosity=2)
