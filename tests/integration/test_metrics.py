#!/usr/bin/python3
"""Operations (issue 8): per-service/per-action metrics with latency, the
Prometheus text endpoint (--metrics), and watch (a copy of every event)."""
import os
import sys
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import brokerproc as bp  # noqa: E402

METRICS_PORT = bp.free_port()


class MetricsTest(bp.BrokerTestCase):
    BROKER_ARGS = ("--metrics", "tcp://127.0.0.1:%d" % METRICS_PORT)

    def round_trips(self, n, service):
        # a service name per test: the previous test's instance may not be
        # seen gone yet, and round-robin would hand it a request
        svc = self.peer(register=service)
        client = self.peer()
        for i in range(n):
            m = client.request(service, "get_price", src="m-client", payload=i)
            _, got = svc.recv()
            svc.answer(got, payload=i)
            client.recv_answer(m["msg_id"])
        m = client.request("m-nobody", "get_price", src="m-client")
        client.recv_answer(m["msg_id"])
        return client

    def test_metrics_action_counts_requests_and_latency(self):
        client = self.round_trips(3, "m-echo")
        body = client.call_broker("metrics")
        series = {(s["service"], s["action"]): s for s in body["payload"]["series"]}
        echo = series[("m-echo", "get_price")]
        self.assertEqual((echo["requests"], echo["answered"], echo["failed"]), (3, 3, 0))
        self.assertGreater(echo["latency_ms"]["mean"], 0)
        # a request nobody could take makes no series (docs/security.md): it
        # counts in the error totals only
        self.assertNotIn(("m-nobody", "get_price"), series)
        self.assertGreaterEqual(client.call_broker("stats")["payload"]["errors"]["no_such_service"], 1)

    def test_prometheus_endpoint_serves_text(self):
        self.round_trips(2, "m-echo-prom")
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % METRICS_PORT, timeout=3) as r:
            self.assertEqual(r.status, 200)
            self.assertIn("text/plain", r.headers["Content-Type"])
            text = r.read().decode()
        self.assertIn('smartshop_requests_total{service="m-echo-prom",action="get_price",dst="m-echo-prom"}', text)
        self.assertIn('smartshop_errors_total{code="no_such_service"}', text)
        self.assertIn('smartshop_request_duration_seconds_bucket{service="m-echo-prom",action="get_price",dst="m-echo-prom",le="+Inf"}', text)
        self.assertIn("smartshop_inflight_requests 0", text)
        # every sample line is "name{labels} value" or "name value"
        for line in text.splitlines():
            if line and not line.startswith("#"):
                float(line.rsplit(" ", 1)[1])

    def test_actions_written_with_escapes_count_as_other(self):
        # an action the broker cannot read as plain bytes is never a label:
        # it is counted under "(other)" (and cannot inject into the text format)
        svc = self.peer(register="m-esc")
        client = self.peer()
        client.request("m-esc", 'say "hi"\\now', src="m-client-2")
        svc.recv()
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % METRICS_PORT, timeout=3) as r:
            text = r.read().decode()
        self.assertIn('smartshop_requests_total{service="m-esc",action="(other)",dst="m-esc"} 1', text)
        self.assertNotIn("say", text)

    def test_watch_gets_every_event_until_unwatch(self):
        watcher = self.peer()
        self.assertEqual(watcher.call_broker("watch", src="m-watcher")["payload"]["status"], "ok")
        svc = self.peer(register="m-listener")
        sender = self.peer()
        sender.send(bp.msg("event", "m-sender", "m-listener", "price_changed", payload={"sku": 1}))
        sender.send(bp.msg("event", "m-sender", "broadcast", "hello"))
        actions = sorted(watcher.recv()[1]["action"] for _ in range(2))
        self.assertEqual(actions, ["hello", "price_changed"])
        svc.recv()
        watcher.call_broker("unwatch", src="m-watcher")
        sender.send(bp.msg("event", "m-sender", "m-listener", "again"))
        svc.recv()
        watcher.expect_nothing(0.3)


if __name__ == "__main__":
    bp.main()
