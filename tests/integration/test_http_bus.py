#!/usr/bin/python3
"""The whole bus in /api/v1/state (issue 25): two brokers with --nats on a
real nats-server, each with --metrics. A name registered on A shows, on
B's state, in "remote" with broker A and its instance count, and B's "bus"
says B's id, that it is connected, and what crossed; a broker that stops
answering is listed as silent. Past HTTP_STATE_REMOTE_MAX (256) names the
list is cut, in name order, and remote_total counts them all. A broker
without --nats has neither "bus" nor "remote".

Before this, /api/v1/state had no bus data at all: every check of "bus"
and "remote" here fails."""
import json
import os
import signal
import sys
import time
import unittest
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import brokerproc as bp  # noqa: E402
from natscluster import BusTestCase, reach  # noqa: E402

try:
    import cdp  # noqa: E402  (python3-websocket; make test installs it, PKGS_TEST)
except ImportError as exc:
    cdp = None
    CDP_MISSING = str(exc)

REMOTE_MAX = 256                # HTTP_STATE_REMOTE_MAX (src/http_snapshot.h)


def state(port):
    with urllib.request.urlopen("http://127.0.0.1:%d/api/v1/state" % port,
                                timeout=10 * bp.SLOW) as r:
        return json.loads(r.read())


def wait_state(port, until, what, timeout=15.0):
    """Polls /api/v1/state (a snapshot a second) until until(state); returns it."""
    deadline = time.monotonic() + timeout * bp.SLOW
    last = None
    while time.monotonic() < deadline:
        last = state(port)
        if until(last):
            return last
        time.sleep(0.1)
    raise AssertionError("%s: not within %.0f s; last state's bus %r, remote %r" % (
        what, timeout, last.get("bus"), (last.get("remote") or [])[:5]))


def remote_of(st, name):
    return [r for r in st.get("remote", []) if r["name"] == name]


class BusState(BusTestCase):
    CLUSTER_SIZE = 1
    BROKER_IDS = ("dash-A", "dash-B")
    http = {"dash-A": bp.free_port(), "dash-B": bp.free_port()}
    PER_BROKER_ARGS = {bid: ["--metrics", "tcp://127.0.0.1:%d" % port]
                       for bid, port in http.items()}

    def test_a_name_on_A_is_listed_on_B_with_its_broker(self):
        svc1 = self.peer("dash-A", "dash-remote-svc")
        self.peer("dash-A", "dash-remote-svc")
        st = wait_state(self.http["dash-B"],
                        lambda s: any(r["instances"] == 2 for r in remote_of(s, "dash-remote-svc")),
                        "dash-remote-svc with 2 instances on B")
        self.assertEqual(remote_of(st, "dash-remote-svc"),
                         [{"name": "dash-remote-svc", "broker": "dash-A", "instances": 2,
                           "silent": False}])
        self.assertGreaterEqual(st["remote_total"], 1)
        self.assertEqual(st["bus"]["broker_id"], "dash-B")
        self.assertIs(st["bus"]["connected"], True)
        self.assertNotIn("dash-A", st["bus"]["silent"])
        # B holds no instance: it is not among B's own services
        self.assertNotIn("dash-remote-svc", [s["name"] for s in st["services"]])
        # A's own state: its id, and its own name is not "remote" there
        a = state(self.http["dash-A"])
        self.assertEqual(a["bus"]["broker_id"], "dash-A")
        self.assertEqual(remote_of(a, "dash-remote-svc"), [])
        # what crossed: a request from B to A's name, counted on both sides
        before = st["bus"]["requests_out"]
        cli = self.peer("dash-B", "dash-till")
        reach(cli, svc1, "dash-remote-svc")
        wait_state(self.http["dash-B"], lambda s: s["bus"]["requests_out"] > before,
                   "B's bus.requests_out counting the request")
        wait_state(self.http["dash-A"], lambda s: s["bus"]["requests_in"] >= 1,
                   "A's bus.requests_in counting it")

    def test_the_remote_list_is_bounded_and_counted(self):
        names = ["dash-many-%03d" % i for i in range(REMOTE_MAX + 44)]
        for k in range(0, len(names), 60):     # 64 names a peer at most (the default)
            p = self.peer("dash-A")
            for n in names[k:k + 60]:
                p.register(n)
        st = wait_state(self.http["dash-B"],
                        lambda s: s["remote_total"] >= len(names),
                        "B counting all %d names" % len(names))
        self.assertEqual(len(st["remote"]), REMOTE_MAX)
        listed = [(r["name"], r["broker"]) for r in st["remote"]]
        self.assertEqual(listed, sorted(listed))         # the first ones, by name
        shown = [r["name"] for r in st["remote"] if r["name"].startswith("dash-many-")]
        self.assertEqual(shown, names[:len(shown)])      # none skipped before the cut

    def test_a_broker_not_heard_is_silent(self):
        self.peer("dash-A", "dash-quiet-svc")
        wait_state(self.http["dash-B"], lambda s: remote_of(s, "dash-quiet-svc"),
                   "dash-quiet-svc on B")
        a = self.brokers["dash-A"]
        a.send_signal(signal.SIGSTOP)           # hung: announces nothing
        try:
            st = wait_state(self.http["dash-B"], lambda s: "dash-A" in s["bus"]["silent"],
                            "dash-A silent on B", timeout=20.0)
            for r in remote_of(st, "dash-quiet-svc"):   # listed a while longer, marked
                self.assertIs(r["silent"], True)
        finally:
            a.send_signal(signal.SIGCONT)
        wait_state(self.http["dash-B"], lambda s: "dash-A" not in s["bus"]["silent"],
                   "dash-A heard again on B")


    @unittest.skipIf(cdp is None, "python3-websocket missing: %s" % (CDP_MISSING if cdp is None else ""))
    def test_the_dashboard_shows_which_broker_holds_a_name(self):
        self.peer("dash-A", "dash-page-svc")
        wait_state(self.http["dash-B"], lambda s: remote_of(s, "dash-page-svc"), "dash-page-svc on B")
        browser = cdp.Chromium(timeout=30 * bp.SLOW)
        self.addCleanup(browser.close)
        page = browser.open("http://127.0.0.1:%d/" % self.http["dash-B"])
        row = page.wait_for("""(() => {
            const tr = document.querySelector('#remote tr[data-remote="dash-page-svc"]');
            return tr && !document.getElementById('bus-panel').hidden && {
                broker: tr.querySelector('td[data-field=broker]').textContent,
                instances: tr.querySelector('td[data-field=instances]').textContent,
                state: document.getElementById('bus-state').textContent,
                id: document.querySelector('[data-field=bus-broker-id]').textContent};
        })()""", 30 * bp.SLOW)
        self.assertEqual(row, {"broker": "dash-A", "instances": "1", "state": "connected",
                               "id": "dash-B"})


class NoBus(unittest.TestCase):
    def test_without_nats_the_state_has_no_bus(self):
        port = bp.free_port()
        with bp.Broker(args=["--metrics", "tcp://127.0.0.1:%d" % port]):
            st = wait_state(port, lambda s: "broker" in s, "the state")
            self.assertNotIn("bus", st)
            self.assertNotIn("remote", st)
            self.assertNotIn("remote_total", st)


if __name__ == "__main__":
    unittest.main(verbosity=2)
