#!/usr/bin/python3
"""A long service list (docs/protocol.md B1 list_services, docs/security.md
"Metrics and listings"): 300 connections register 19,200 names, then a
peer floods list_services. Every answer stays within --max-message-bytes,
pages with "truncated"/"next" give back exactly the registered names, and a
bystander's round trips through the broker stay fast while the flood runs.

Before the fix each answer was the whole list (1.5 MB, over the 1 MiB
limit), built from scratch each time: the bystander waited seconds."""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "integration"))
import brokerproc as bp  # noqa: E402
from metrics_bystander import stalls_no_one  # noqa: E402

NAMES_PER_PEER = 64          # the default --max-names-per-peer
PEERS = 300


def name(i, j):
    # 52 bytes: long names make a long list (19,200 of them: ~1.4 MB)
    return "m-list-%03d-%02d-%s" % (i, j, "n" * 38)


class LongListTest(bp.BrokerTestCase):
    BROKER_ARGS = ("--log-level", "warn")

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.holders = []
        for i in range(PEERS):
            p = cls.broker.peer()
            for j in range(NAMES_PER_PEER):
                p.send(bp.msg("register", name(i, j), "broker", "register"))
            cls.holders.append(p)
        for p in cls.holders:
            for _ in range(NAMES_PER_PEER):
                _, body = p.recv(30 * bp.SLOW)
                assert body["type"] == "response", body
        cls.expected = sorted(name(i, j) for i in range(PEERS) for j in range(NAMES_PER_PEER))

    @classmethod
    def tearDownClass(cls):
        for p in cls.holders:
            p.close()
        super().tearDownClass()

    def all_pages(self, peer, limit=None, max_bytes=1048576):
        """The whole list, page by page; asserts every page's size."""
        got, after, pages = [], None, 0
        while True:
            payload = {}
            if after is not None:
                payload["after"] = after
            if limit is not None:
                payload["limit"] = limit
            m = peer.send(bp.msg("request", "m-lister", "broker", "list_services", payload=payload))
            frames, body = peer.recv_answer(m["msg_id"], 10 * bp.SLOW)
            self.assertLessEqual(len(frames[-1]), max_bytes)
            self.assertEqual(body["type"], "response", bp.dump(body)[:300])
            page = body["payload"]
            names = [s["name"] for s in page["services"]]
            self.assertTrue(names, "an empty page before the end")
            if limit is not None:
                self.assertLessEqual(len(names), limit)
            got += names
            pages += 1
            if not page["truncated"]:
                self.assertNotIn("next", page)
                return got, pages
            self.assertEqual(page["next"], names[-1])
            after = page["next"]

    def test_flood_of_list_services_is_bounded_and_stalls_no_one(self):
        attacker = self.peer()
        answers = []

        def attack():
            # a registration changes the list: the first answer after it is a new build
            self.holders[0].unregister(name(0, 0))
            self.holders[0].register(name(0, 0))
            for _ in range(100):
                attacker.send(bp.msg("request", "m-attacker", "broker", "list_services"))
            for _ in range(100):
                frames, body = attacker.recv(30 * bp.SLOW)
                answers.append((len(frames[-1]), body))

        stalls_no_one(self, self.broker, attack)
        for size, body in answers:
            self.assertLessEqual(size, 1048576)          # --max-message-bytes
            self.assertEqual(body["type"], "response")
            self.assertTrue(body["payload"]["truncated"])

    def test_pages_give_back_every_name_once_in_order(self):
        got, pages = self.all_pages(self.peer())
        self.assertEqual(got, self.expected)
        self.assertGreater(pages, 1)

    def test_limit_makes_smaller_pages(self):
        got, pages = self.all_pages(self.peer(), limit=500)
        self.assertEqual(got, self.expected)
        self.assertEqual(pages, len(self.expected) // 500 + 1)

    def test_after_a_name_that_is_not_registered(self):
        p = self.peer()
        body = p.call_broker("list_services", payload={"after": "m-list-150"}, src="m-lister")
        names = [s["name"] for s in body["payload"]["services"]]
        self.assertEqual(names[0], name(150, 0))
        body = p.call_broker("list_services", payload={"after": "zzz"}, src="m-lister")
        self.assertEqual(body["payload"], {"services": [], "truncated": False})

    def test_a_bad_cursor_is_a_clear_error(self):
        p = self.peer()
        for payload in ({"after": 5}, {"limit": 0}, {"limit": -1}, {"limit": 1.5},
                        {"limit": "10"}, {"after": "x" * 65}):
            body = p.call_broker("list_services", payload=payload, src="m-lister")
            self.assertEqual(body["type"], "response", bp.dump(body))
            self.assertEqual(body["payload"]["status"], "error", bp.dump(body))
            self.assertIsInstance(body["payload"]["message"], str)


class SmallMessagesTest(bp.FreshBrokerTestCase):
    """With a small --max-message-bytes, pages shrink to fit it."""

    def test_pages_fit_a_small_message_limit(self):
        self.b = bp.Broker(args=("--max-message-bytes", "2048"))
        empty = self.peer().call_broker("list_services", src="m-lister")
        self.assertEqual(empty["payload"], {"services": [], "truncated": False})
        holder = self.peer()
        names = sorted("m-small-%03d" % i for i in range(60))
        for n in names:
            holder.register(n)
        p = self.peer()
        got, after = [], None
        for _ in range(100):
            payload = {"after": after} if after else None
            m = p.send(bp.msg("request", "m-lister", "broker", "list_services", payload=payload))
            frames, body = p.recv_answer(m["msg_id"])
            self.assertLessEqual(len(frames[-1]), 2048)
            got += [s["name"] for s in body["payload"]["services"]]
            if not body["payload"]["truncated"]:
                break
            after = body["payload"]["next"]
        self.assertEqual(got, names)


if __name__ == "__main__":
    bp.main()
