"""Steady request traffic across brokers, for the failure tests and the soak.

Traffic(clients, services) sends requests from each client (a Peer) to a
service name at a steady rate, answers them from every service Peer that
gets one, and records for each msg_id every answer that came back. One
thread: run(seconds, on_tick) pumps everything with a zmq.Poller;
on_tick(t) is called between pumps (kill a broker at t=2 ...).

report() -> dict: sent, answered (response), errors by code, duplicates
(msg_ids answered more than once), unanswered (after the final wait).
"""
import json
import time

import zmq

from brokerproc import SLOW, error_code, msg


class Traffic:
    def __init__(self, clients, services, name, rate=100, ttl_ms=1000):
        self.clients = list(clients)        # [(label, Peer)]
        self.services = list(services)      # [(label, Peer)]
        self.name = name
        self.rate = rate
        self.ttl_ms = ttl_ms
        self.sent = {}                      # msg_id -> (client label, time sent)
        self.answers = {}                   # msg_id -> [(kind, time)]
        self.handled_by = {}                # service label -> count
        self.timeline = []                  # (t, msg_id, outcome)
        self.t0 = time.monotonic()

    def set_services(self, services):
        self.services = list(services)

    def set_clients(self, clients):
        self.clients = list(clients)

    def _send(self, label, peer):
        m = msg("request", peer.name, self.name, "work", payload={"n": len(self.sent)},
                ttl_ms=self.ttl_ms)
        try:
            peer.send(m)
        except zmq.ZMQError:
            return
        self.sent[m["msg_id"]] = (label, time.monotonic() - self.t0)

    def _pump(self, timeout_ms):
        poller = zmq.Poller()
        for _, p in self.clients + self.services:
            if not p.closed:
                poller.register(p.sock, zmq.POLLIN)
        events = dict(poller.poll(timeout_ms))
        for label, p in self.services:
            if p.closed or p.sock not in events:
                continue
            while True:
                try:
                    frames = p.sock.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                body = json.loads(frames[-1])
                if body.get("type") == "request" and body.get("action") == "work":
                    self.handled_by[label] = self.handled_by.get(label, 0) + 1
                    try:
                        p.answer(body, {"by": label})
                    except zmq.ZMQError:
                        pass
        for label, p in self.clients:
            if p.closed or p.sock not in events:
                continue
            while True:
                try:
                    frames = p.sock.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                body = json.loads(frames[-1])
                mid = body.get("correlation_id")
                if mid not in self.sent:
                    continue
                kind = "response" if body.get("type") == "response" else error_code(body)
                t = time.monotonic() - self.t0
                self.answers.setdefault(mid, []).append((kind, t))
                self.timeline.append((t, mid, kind))

    def run(self, seconds, on_tick=None):
        """Send for `seconds`, then wait for the last answers (ttl + 2 s)."""
        interval = 1.0 / self.rate
        start = time.monotonic()
        next_send = start
        while time.monotonic() - start < seconds:
            now = time.monotonic()
            while next_send <= now:
                for label, p in self.clients:
                    if not p.closed:
                        self._send(label, p)
                next_send += interval * len(self.clients)
            self._pump(max(0, int((next_send - time.monotonic()) * 1000)))
            if on_tick:
                on_tick(time.monotonic() - self.t0)
        self.drain()

    def drain(self):
        deadline = time.monotonic() + self.ttl_ms / 1000.0 + 2.0 * SLOW
        while time.monotonic() < deadline and len(self.answers) < len(self.sent):
            self._pump(50)
        end = time.monotonic() + 0.3
        while time.monotonic() < end:            # any duplicate shows up now
            self._pump(50)

    def report(self):
        codes = {}
        for outcomes in self.answers.values():
            kind = outcomes[0][0]
            codes[kind] = codes.get(kind, 0) + 1
        return {
            "sent": len(self.sent),
            "outcomes": codes,
            "duplicates": sorted(m for m, o in self.answers.items() if len(o) > 1),
            "unanswered": sorted(set(self.sent) - set(self.answers)),
            "handled_by": dict(self.handled_by),
        }

    def outcomes_between(self, t_from, t_to):
        """{outcome: count} of requests sent between the two times."""
        out = {}
        for mid, (_, t) in self.sent.items():
            if t_from <= t < t_to and mid in self.answers:
                kind = self.answers[mid][0][0]
                out[kind] = out.get(kind, 0) + 1
        return out
