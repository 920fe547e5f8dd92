#!/usr/bin/python3
"""Requests and named events spread round-robin across the instances of a
name (T1, T3, T5); answers go back to whoever asked."""
import os
import sys
import time

import zmq

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import brokerproc as bp  # noqa: E402


def collect(instances, expected_total, timeout=3.0):
    """Receive until `expected_total` messages arrived across instances: {index: [dicts]}."""
    poller = zmq.Poller()
    for p in instances:
        poller.register(p.sock, zmq.POLLIN)
    got = {i: [] for i in range(len(instances))}
    total = 0
    deadline = time.monotonic() + timeout
    while total < expected_total and time.monotonic() < deadline:
        ready = dict(poller.poll(100))
        for i, p in enumerate(instances):
            if p.sock in ready:
                frames = p.sock.recv_multipart()
                got[i].append(bp.loads(frames[-1]))
                total += 1
    return got


class RoundRobinTest(bp.BrokerTestCase):
    def instances(self, name, n=3):
        return [self.peer(identity="%s-%d" % (name, i), register=name) for i in range(n)]

    def test_requests_spread_evenly_across_three_instances(self):
        inst = self.instances("rr-a")
        client = self.peer()
        reqs = [client.request("rr-a", "work", src="client-a", payload=i) for i in range(30)]
        got = collect(inst, 30)
        counts = [len(got[i]) for i in range(3)]
        self.assertEqual(sum(counts), 30, counts)
        self.assertEqual(counts, [10, 10, 10], "uneven share: %r" % counts)
        for p in inst:
            p.expect_nothing(0.1)
        # Each request reached exactly one instance.
        seen = sorted(m["msg_id"] for i in got for m in got[i])
        self.assertEqual(seen, sorted(r["msg_id"] for r in reqs))

    def test_consecutive_requests_go_to_different_instances(self):
        inst = self.instances("rr-b")
        client = self.peer()
        order = []
        for i in range(6):
            client.request("rr-b", "work", src="client-b", payload=i)
            got = collect(inst, 1)
            order.append([k for k in got if got[k]][0])
        self.assertEqual(len(set(order[:3])), 3, "first three went to %r" % order)
        self.assertEqual(order[3:], order[:3], "not a rotation: %r" % order)

    def test_answers_from_every_instance_reach_the_requester(self):
        inst = self.instances("rr-c")
        client = self.peer()
        reqs = [client.request("rr-c", "work", src="client-c", payload=i) for i in range(9)]
        got = collect(inst, 9)
        for i, p in enumerate(inst):
            for m in got[i]:
                p.answer(m, src="rr-c", payload={"by": i, "n": m["payload"]})
        answers = {}
        for _ in reqs:
            _, body = client.recv()
            answers[body["correlation_id"]] = body
        self.assertEqual(sorted(answers), sorted(r["msg_id"] for r in reqs))
        self.assertEqual({a["payload"]["by"] for a in answers.values()}, {0, 1, 2})

    def test_named_events_spread_across_instances(self):
        inst = self.instances("rr-d")
        sender = self.peer()
        for i in range(9):
            sender.send(bp.msg("event", "ev-sender-d", "rr-d", "tick", payload=i))
        got = collect(inst, 9)
        self.assertEqual([len(got[i]) for i in range(3)], [3, 3, 3])
        sender.expect_nothing(0.2)  # events are not answered on success

    def test_a_closed_instance_gets_no_more_requests(self):
        inst = self.instances("rr-e")
        inst[1].close()
        client = self.peer()
        bp.wait_until(lambda: bp.services(client).get("rr-e") == 2, timeout=2.0)
        for i in range(10):
            client.request("rr-e", "work", src="client-e", payload=i)
        got = collect([inst[0], inst[2]], 10)
        self.assertEqual([len(got[0]), len(got[1])], [5, 5])
        client.expect_nothing(0.2)  # nothing failed

    def test_two_clients_share_the_rotation(self):
        inst = self.instances("rr-f")
        c1, c2 = self.peer(), self.peer()
        for i in range(6):
            (c1 if i % 2 else c2).request("rr-f", "work", src="client-f%d" % (i % 2), payload=i)
        got = collect(inst, 6)
        self.assertEqual([len(got[i]) for i in range(3)], [2, 2, 2])


if __name__ == "__main__":
    bp.main()
