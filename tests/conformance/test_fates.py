"""D1-D5: deadlines and the fate of requests, busy, graceful stop (docs/protocol.md section 9)."""

import os
import signal
import time
import unittest

import zmq

from bus import BusTest, Peer, Received, env, uname, t, CONFIG


class Fates(BusTest):

    def recv_any(self, peers, timeout=1.0):
        """The first message any of peers receives: (peer, Received) or (None, None)."""
        poller = zmq.Poller()
        for p in peers:
            poller.register(p.sock, zmq.POLLIN)
        for sock, _ in poller.poll(int(t(timeout) * 1000)):
            for p in peers:
                if p.sock is sock:
                    return p, Received(sock.recv_multipart())
        return None, None

    def test_D1_ttl_deadline_gives_timeout_and_late_answer_is_refused(self):
        svc, cli = self.service_and_client()
        t0 = time.monotonic()
        m, got = self.send_request(cli, svc, action="slow", ttl_ms=200)
        r = self.expect_error(cli, "timeout", corr=m["msg_id"], timeout=1.5)
        elapsed = time.monotonic() - t0
        self.assertGreaterEqual(elapsed, 0.18, "timeout before the deadline (%.3fs)" % elapsed)
        self.assertEqual((r["dst"], r["action"]), (cli.name, "slow"))
        late = self.answer(svc, got.msg)
        self.expect_error(svc, "unknown_request", corr=late["msg_id"])
        self.expect_nothing(cli, what="no late answer, no second error")

    def test_D1_each_request_has_its_own_deadline(self):
        svc, cli = self.service_and_client()
        long_, _ = self.send_request(cli, svc, ttl_ms=700)
        short, _ = self.send_request(cli, svc, ttl_ms=150)
        self.expect_error(cli, "timeout", corr=short["msg_id"], timeout=0.6)
        self.expect_error(cli, "timeout", corr=long_["msg_id"], timeout=1.2)

    def test_D2_handler_gone_gives_service_gone_and_no_second_delivery(self):
        name = uname("d2")
        a, b = self.peer(name), self.peer(name)
        self.register(a)
        self.register(b)
        cli = self.peer(uname("cli"))
        m = cli.send(env("request", cli.name, name, "work"))
        handler, got = self.recv_any([a, b])
        self.assertIsNotNone(handler, "the request reached no instance")
        self.assertEqual(got.msg["msg_id"], m["msg_id"])
        other = b if handler is a else a
        handler.close()
        r = self.expect_error(cli, "service_gone", corr=m["msg_id"], timeout=2.0)
        self.assertEqual(r["dst"], cli.name)
        self.expect_nothing(other, 0.2, "never handed to a second instance")
        self.expect_nothing(cli, 0.1, "exactly one answer")

    def test_D3_requester_gone_answer_dropped_and_counted(self):
        svc = self.peer(uname("d3"))
        self.register(svc)
        obs = self.peer(uname("obs"))
        before = self.stats(obs)["dropped"]["requester_gone"]
        cli = self.peer(uname("cli"))
        m, got = self.send_request(cli, svc)
        cli.close()
        time.sleep(t(0.3))           # let the broker see the disconnect
        self.answer(svc, got.msg)
        self.expect_nothing(svc, 0.3, "no error to the service")
        self.assertTrue(self.wait_until(
            lambda: self.stats(obs)["dropped"]["requester_gone"] >= before + 1, 1.0),
            "dropped.requester_gone did not count the answer")

    def test_D4_full_outbound_queue_answers_busy(self):
        # A service that never reads, with a receive HWM of 1: the broker's
        # queue to it (send HWM, 1000 by default) fills after the TCP buffers.
        svc = self.peer(uname("d4"), rcvhwm=1)
        self.register(svc)
        cli = self.peer(uname("cli"))
        cli.sock.setsockopt(zmq.SNDTIMEO, int(t(2.0) * 1000))
        payload = "x" * 32768
        sent, busy, other = [], set(), []
        deadline = time.monotonic() + t(10.0)
        while not busy and len(sent) < 4000 and time.monotonic() < deadline:
            m = env("event", cli.name, svc.name, "fill", payload)
            try:
                cli.send(m)
            except zmq.Again:
                self.fail("the broker stopped reading (blocked on a full peer?) after %d events" % len(sent))
            sent.append(m["msg_id"])
            while cli.sock.poll(0):
                r = Received(cli.sock.recv_multipart())
                if r.msg and r.msg.get("payload", {}).get("code") == "busy":
                    busy.add(r.msg["correlation_id"])
                else:
                    other.append(r.raw[:200])
        self.assertTrue(busy, "no busy after %d events of 32 KiB to a peer that does not read" % len(sent))
        # drain both sides: every event is either delivered or answered busy
        while True:
            r = cli.recv(0.3)
            if r is None:
                break
            if r.msg and r.msg.get("payload", {}).get("code") == "busy":
                busy.add(r.msg["correlation_id"])
            else:
                other.append(r.raw[:200])
        delivered = []
        while True:
            r = svc.recv(0.5)
            if r is None:
                break
            delivered.append(r.msg["msg_id"])
        self.assertEqual(other, [], "only busy errors expected")
        self.assertEqual(len(delivered), len(set(delivered)), "duplicate delivery")
        self.assertFalse(set(delivered) & busy, "a message both delivered and answered busy")
        self.assertEqual(set(delivered) | busy, set(sent),
                         "%d sent, %d delivered, %d busy" % (len(sent), len(delivered), len(busy)))

    @unittest.skipUnless(CONFIG.broker_pid, "D5: graceful stop needs a signal to the broker; "
                         "run alone with --broker-pid PID (run_local.sh does)")
    def test_D5_graceful_stop(self):
        svc, cli = self.service_and_client()
        m1, g1 = self.send_request(cli, svc)          # answered during the grace period
        m3, _ = self.send_request(cli, svc)           # never answered
        os.kill(CONFIG.broker_pid, signal.SIGTERM)
        t0 = time.monotonic()
        time.sleep(t(0.2))
        m2 = cli.send(env("request", cli.name, svc.name, "work"))
        self.expect_error(cli, "shutting_down", corr=m2["msg_id"])
        self.expect_nothing(svc, 0.1, "no new request handed over")
        self.answer(svc, g1.msg)
        self.expect_response(cli, m1["msg_id"])
        self.expect_error(cli, "shutting_down", corr=m3["msg_id"], timeout=4.0)
        self.assertGreaterEqual(time.monotonic() - t0, 1.5, "in-flight request failed before the grace period")
