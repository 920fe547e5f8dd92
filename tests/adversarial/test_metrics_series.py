#!/usr/bin/python3
"""Metric series a peer can make (docs/security.md "Metrics and
listings"): requests to names nobody registered, and random actions to a
registered one. A series exists only for a registered service, at most
--metrics-max-series of them; past that, requests count in one overflow
series (service "_other") so totals stay honest; refused requests count
in the error totals only.

Before the fix every dst made a series, even no_such_service ones, and
past 1,100 series requests were no longer counted at all."""
import os
import sys
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "integration"))
import brokerproc as bp  # noqa: E402

METRICS_PORT = bp.free_port()
MAX_SERIES = 50


def scrape():
    url = "http://127.0.0.1:%d/metrics" % METRICS_PORT
    with urllib.request.urlopen(url, timeout=10 * bp.SLOW) as r:
        return r.read().decode()


def samples(text, metric):
    """{labels text: value} of one metric's samples."""
    out = {}
    for line in text.splitlines():
        if line.startswith(metric + "{"):
            labels, value = line[len(metric):].rsplit(" ", 1)
            out[labels] = float(value)
    return out


class SeriesBoundTest(bp.BrokerTestCase):
    BROKER_ARGS = ("--metrics", "tcp://127.0.0.1:%d" % METRICS_PORT,
                   "--metrics-max-series", str(MAX_SERIES), "--log-level", "warn")

    def series(self, peer):
        return peer.call_broker("metrics", src="m-observer")["payload"]["series"]

    def test_unroutable_destinations_make_no_series(self):
        client = self.peer()
        for batch in range(4):
            for i in range(500):
                client.request("m-nobody-%d-%d" % (batch, i), "get", src="m-prober")
            for i in range(500):
                _, body = client.recv(10 * bp.SLOW)
                self.assertError(body, "no_such_service")
        services = {s["service"] for s in self.series(client)}
        made = sorted(s for s in services if s.startswith("m-nobody"))
        self.assertEqual(len(made), 0, "series made for unregistered names: %s ..." % made[:3])
        text = scrape()
        self.assertNotIn("m-nobody", text)
        errors = samples(text, "smartshop_errors_total")
        self.assertGreaterEqual(errors['{code="no_such_service"}'], 2000)

    def test_random_actions_stop_at_the_bound_and_totals_stay_honest(self):
        svc = self.peer(register="m-bounded")
        client = self.peer()
        sent = 400
        for i in range(sent):
            client.request("m-bounded", "act-%d" % i, src="m-random")
            _, got = svc.recv(10 * bp.SLOW)
            svc.answer(got)
            client.recv(10 * bp.SLOW)
        series = self.series(client)
        self.assertLessEqual(len(series), MAX_SERIES + 1, "series past the bound")   # + overflow
        ours = sum(s["requests"] for s in series if s["service"] == "m-bounded")
        other = [s for s in series if s["service"] == "_other"]
        self.assertEqual(len(other), 1, "one overflow series")
        self.assertEqual(ours + other[0]["requests"], sent)
        self.assertEqual(other[0]["action"], "(other)")
        text = scrape()
        requests = samples(text, "smartshop_requests_total")
        self.assertLessEqual(len(requests), MAX_SERIES + 1)
        self.assertIn('{service="_other",action="(other)",dst="(other)"}', requests)
        counted = sum(v for k, v in requests.items()
                      if 'service="m-bounded"' in k or 'service="_other"' in k)
        self.assertEqual(counted, sent)
        answered = samples(text, "smartshop_request_duration_seconds_count")
        self.assertEqual(answered['{service="_other",action="(other)",dst="(other)"}'], other[0]["answered"])


if __name__ == "__main__":
    bp.main()
