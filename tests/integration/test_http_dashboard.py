#!/usr/bin/python3
"""The dashboard in a real browser (issue 19): Debian's chromium, headless,
opens the page the broker serves (--metrics), while real ZeroMQ peers keep
up traffic: two instances of a service that answers, one that answers
with an error every third request, and requests for a service nobody
holds (refused, and kept as dead letters), under a policy with a filter
hook. The page must refresh by itself and show, once the traffic stops,
exactly the broker's own numbers (its metrics, list_services, stats and
dead_letters actions). A screenshot is kept as a test artifact:
<build>/artifacts/dashboard.png (the build directory of $SMARTSHOP_BROKER).

Before issue 19 the broker served no page at all: / answered the
Prometheus text, like every other path."""
import os
import shutil
import sys
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import brokerproc as bp  # noqa: E402

try:
    import cdp  # noqa: E402  (python3-websocket)
except ImportError as exc:      # make test installs it (PKGS_TEST)
    cdp = None
    CDP_MISSING = str(exc)

HTTP_PORT = bp.free_port()
POLICY = """
-- the dashboard's test policy: a filter that lets everything pass
function filter(msg)
  return true
end
"""
ARTIFACT = os.path.join(os.path.dirname(bp.broker_path()), "artifacts", "dashboard.png")


class Traffic:
    """Services answering and a client asking, each on its own thread,
    until stop(). dash-echo has two instances and always answers;
    dash-stock answers an error (insufficient_stock) every third request;
    dash-nobody is never registered."""

    def __init__(self, broker):
        self.broker = broker
        self.stopping = threading.Event()
        self.sent = 0
        self.errors = []
        self.threads = []
        self.peers = []
        for name, fail_every in (("dash-echo", 0), ("dash-echo", 0), ("dash-stock", 3)):
            p = broker.peer()
            p.register(name)
            self.peers.append(p)
            self.threads.append(threading.Thread(target=self.serve, args=(p, fail_every), daemon=True))
        self.client = broker.peer(name="dash-client")
        self.peers.append(self.client)
        self.threads.append(threading.Thread(target=self.ask, daemon=True))

    def serve(self, peer, fail_every):
        n = 0
        while not self.stopping.is_set() or peer.sock.poll(0):
            frames = peer.recv_raw(0.1)
            if frames is None:
                continue
            req = bp.loads(frames[-1])
            n += 1
            time.sleep(0.002)           # some latency to measure
            if fail_every and n % fail_every == 0:
                peer.answer(req, type="error", payload={"code": "insufficient_stock",
                                                        "message": "none left"})
            else:
                peer.answer(req, payload={"echo": req.get("payload")})

    def ask(self):
        i = 0
        while not self.stopping.is_set():
            dst = ("dash-echo", "dash-echo", "dash-stock", "dash-nobody")[i % 4]
            m = self.client.request(dst, "get_price", payload=i)
            try:
                self.client.recv_answer(m["msg_id"], 10 * bp.SLOW)
            except AssertionError as exc:
                self.errors.append(str(exc))
                return
            self.sent += 1
            i += 1
            time.sleep(0.01)

    def start(self):
        for t in self.threads:
            t.start()

    def stop(self):
        self.stopping.set()
        for t in self.threads:
            t.join(30)

    def close(self):
        for p in self.peers:
            p.close()


def sums_by_service(metrics_payload):
    """{service: (requests, ok, failed)} from the metrics action's series."""
    out = {}
    for s in metrics_payload["series"]:
        r, o, f = out.get(s["service"], (0, 0, 0))
        out[s["service"]] = (r + s["requests"], o + s["ok"], f + s["failed"])
    return out


@__import__("unittest").skipIf(cdp is None, "python3-websocket missing: %s" % (
    CDP_MISSING if cdp is None else ""))
class DashboardTest(bp.PolicyTestCase):
    POLICY = POLICY
    EXTRA_ARGS = ("--metrics", "tcp://127.0.0.1:%d" % HTTP_PORT)

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.browser = cdp.Chromium(timeout=30 * bp.SLOW)

    @classmethod
    def tearDownClass(cls):
        cls.browser.close()
        super().tearDownClass()

    def page_numbers(self, page):
        """{service: {field: text}} of the services table as the page shows it."""
        return page.evaluate("""(() => {
            const out = {};
            for (const tr of document.querySelectorAll('#services tbody tr[data-service]')) {
                const row = {};
                for (const td of tr.querySelectorAll('td[data-field]'))
                    row[td.dataset.field] = td.dataset.count !== undefined ? td.dataset.count : td.textContent;
                out[tr.dataset.service] = row;
            }
            return out;
        })()""")

    def test_the_page_shows_the_broker_live(self):
        traffic = Traffic(self.broker)
        self.addCleanup(traffic.close)
        traffic.start()
        try:
            page = self.browser.open("http://127.0.0.1:%d/" % HTTP_PORT)
            page.wait_for("Number(document.body.dataset.refreshed || 0) >= 1", 30 * bp.SLOW)
            self.assertEqual(page.evaluate("document.title"), "Smartshop bus")
            # live: without a reload, the counts grow while traffic runs
            page.wait_for("!!document.querySelector('#services tr[data-service=\"dash-echo\"]')",
                          20 * bp.SLOW)
            first = int(self.page_numbers(page)["dash-echo"]["requests"].replace(",", ""))
            seen = int(page.evaluate("document.body.dataset.refreshed"))
            page.wait_for("Number(document.body.dataset.refreshed) >= %d" % (seen + 2), 20 * bp.SLOW)
            later = int(self.page_numbers(page)["dash-echo"]["requests"].replace(",", ""))
            self.assertGreater(later, first, "the page did not refresh by itself")
            # two history steps: the charts and the last minute's latency
            page.wait_for("document.querySelectorAll('#services td[data-field=rate_chart] path').length > 0",
                          20 * bp.SLOW)
        finally:
            traffic.stop()
        self.assertEqual(traffic.errors, [])
        self.assertGreater(traffic.sent, 20)

        # quiet now: the page must come to show exactly the broker's numbers
        asker = self.peer(name="dash-checker")
        want = sums_by_service(asker.call_broker("metrics")["payload"])
        instances = bp.services(asker)
        stats = asker.call_broker("stats")["payload"]
        dead = asker.call_broker("dead_letters", payload={"limit": 1000})["payload"]
        for name in ("dash-echo", "dash-stock"):
            self.assertIn(name, want)
        self.assertEqual(want["dash-echo"][2], 0)
        # a service's error answers are failures (issue 19), on the page too
        self.assertGreater(want["dash-stock"][2], 0)

        def shows_broker_numbers():
            rows = self.page_numbers(page)
            for name in want:           # every service the metrics count
                row = rows.get(name)
                if not row:
                    return False
                shown = tuple(int(row[k].replace(",", "")) for k in ("requests", "ok", "failed"))
                if shown != want[name] or int(row["instances"]) != instances.get(name, 0):
                    return False
            peers = page.evaluate("document.getElementById('card-peers').textContent")
            return int(peers.replace(",", "")) == stats["peers"]

        deadline = time.monotonic() + 20 * bp.SLOW
        while not shows_broker_numbers():
            if time.monotonic() > deadline:
                self.fail("the page shows %r, the broker says %r (instances %r)"
                          % (self.page_numbers(page), want, instances))
            time.sleep(0.2)
        rows = self.page_numbers(page)
        self.assertEqual(rows["dash-echo"]["instances"], "2")
        for name in ("dash-echo", "dash-stock"):
            self.assertRegex(rows[name]["p50"], r"^[0-9.]+ (µs|ms|s)$", rows[name])
            self.assertRegex(rows[name]["p99"], r"^[0-9.]+ (µs|ms|s)$", rows[name])
        # the cards, the dead letters and the policy in force
        cards = page.evaluate("""({peers: document.getElementById('card-peers').textContent,
                                   dead: document.getElementById('card-dead').textContent,
                                   policy: document.querySelector('[data-field=policy-state]').textContent,
                                   hooks: document.querySelector('[data-field=policy-hooks]').textContent,
                                   source: document.getElementById('policy-source').textContent,
                                   deadRows: document.querySelectorAll('#dead tr[data-dead-letter]').length,
                                   ready: document.getElementById('ready').textContent})""")
        self.assertEqual(cards["policy"], "loaded")
        self.assertEqual(cards["hooks"], "filter")
        self.assertIn("function filter(msg)", cards["source"])
        self.assertEqual(cards["ready"], "ready")
        # without --nats the page has no bus panel (test_http_bus.py has one)
        self.assertIs(page.evaluate("document.getElementById('bus-panel').hidden"), True)
        self.assertGreater(stats["errors"]["no_such_service"], 0)
        self.assertEqual(int(cards["dead"].replace(",", "")), dead["count"])
        self.assertGreater(cards["deadRows"], 0)
        self.assertEqual(int(cards["peers"].replace(",", "")), stats["peers"])

        path = page.screenshot(ARTIFACT)
        self.assertGreater(os.path.getsize(path), 20000)
        print("screenshot: %s" % path, file=sys.stderr)
        if os.environ.get("SMARTSHOP_SCREENSHOT_TO"):    # to refresh docs/img/dashboard.png
            shutil.copy(path, os.environ["SMARTSHOP_SCREENSHOT_TO"])

    def test_the_page_and_its_assets_come_from_the_broker(self):
        # every asset the page names is served by the broker itself (no CDN)
        with urllib.request.urlopen("http://127.0.0.1:%d/" % HTTP_PORT, timeout=5) as r:
            html = r.read().decode()
            self.assertIn("default-src 'self'", r.headers["Content-Security-Policy"])
        for asset in ("dashboard.js", "dashboard.css", "favicon.svg"):
            self.assertIn(asset, html)
            with urllib.request.urlopen("http://127.0.0.1:%d/%s" % (HTTP_PORT, asset), timeout=5) as r:
                self.assertEqual(r.status, 200)
                self.assertGreater(len(r.read()), 100)
        self.assertNotIn("http://", html.replace("http://127.0.0.1", ""))
        self.assertNotIn("https://", html)


if __name__ == "__main__":
    bp.main()
