#!/usr/bin/python3
"""The example policies in policies/examples/, each copied to a temp dir and
run by the real broker (--policy), through real sockets: one test class per
example, plus a static check that each defines no globals but its hooks."""
import os
import re
import shutil
import subprocess
import sys
import time
import unittest

import zmq

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import brokerproc as bp  # noqa: E402

EXAMPLES = os.path.join(bp.REPO_ROOT, "policies", "examples")
HOOKS = {"filter", "route", "on_register", "on_unregister", "authorize"}
# What the sandbox gives a policy (docs/policies.md).
SANDBOX_GLOBALS = {
    "assert", "error", "getmetatable", "ipairs", "next", "pairs", "pcall", "print", "rawequal",
    "rawget", "rawlen", "rawset", "select", "setmetatable", "tonumber", "tostring", "type",
    "xpcall", "_G", "_VERSION", "string", "table", "math", "utf8", "os", "json", "log",
    "require", "now_ms",
}


class ExampleCase(bp.FreshBrokerTestCase):
    """A fresh broker per test, running a copy of policies/examples/<EXAMPLE>."""

    EXAMPLE = None

    def setUp(self):
        super().setUp()
        self.tmp, self.policy = bp.policy_dir(name=self.EXAMPLE)
        self.addCleanup(shutil.rmtree, self.tmp, True)
        shutil.copy(os.path.join(EXAMPLES, self.EXAMPLE), self.policy)
        self.b = bp.Broker(args=["--policy", self.policy])

    def receive_on(self, peers, count, timeout=2.0):
        """`count` messages arriving at any of `peers`: a list of (peer, frames, body)."""
        poller = zmq.Poller()
        for p in peers:
            poller.register(p.sock, zmq.POLLIN)
        by_sock = {p.sock: p for p in peers}
        got = []
        deadline = time.monotonic() + timeout
        while len(got) < count:
            left = deadline - time.monotonic()
            if left <= 0:
                self.fail("only %d of %d messages arrived: %r" % (len(got), count, got))
            for sock, _ in poller.poll(int(left * 1000) + 1):
                p = by_sock[sock]
                frames = sock.recv_multipart()
                got.append((p, frames, bp.loads(frames[-1])))
        return got

    def round_trip(self, client, services, dst, **kw):
        """One request from client; the instance that gets it answers. Returns that instance."""
        req = client.request(dst, **kw)
        [(inst, frames, body)] = self.receive_on(services, 1)
        self.assertEqual(frames[-1], bp.dumps(req), "not forwarded as the bytes sent")
        inst.answer(body, payload={"by": inst.name})
        _, answer = client.recv_answer(req["msg_id"])
        self.assertEqual(answer["type"], "response", bp.dump(answer))
        return inst


class DenyListTest(ExampleCase):
    EXAMPLE = "deny_list.lua"

    def test_denied_sender_gets_denied_with_the_reason(self):
        orders = self.peer(register="orders")
        scraper = self.peer(name="legacy-scraper")
        req = scraper.request("orders", action="list")
        body = self.expectError(scraper, "denied", correlation_id=req["msg_id"])
        self.assertEqual(body["payload"]["message"], "this client is retired: use catalog-api")
        orders.expect_nothing(0.2)

    def test_denied_actions_are_refused_for_requests_and_events(self):
        orders = self.peer(register="orders")
        client = self.peer(name="shop-ui")
        req = client.request("orders", action="drop_all_tables")
        body = self.expectError(client, "denied", correlation_id=req["msg_id"])
        self.assertEqual(body["payload"]["message"], "not on this bus")
        ev = client.send(bp.msg("event", "shop-ui", "orders", "debug_dump"))
        body = self.expectError(client, "denied", correlation_id=ev["msg_id"])
        self.assertEqual(body["payload"]["message"], "debug actions are off in production")
        orders.expect_nothing(0.2)

    def test_everything_else_passes_as_the_bytes_sent(self):
        orders = self.peer(register="orders")
        client = self.peer(name="shop-ui")
        self.assertIs(self.round_trip(client, [orders], "orders", action="list"), orders)


class AliasTest(ExampleCase):
    EXAMPLE = "alias.lua"

    def test_old_name_reaches_the_new_service_with_dst_unchanged(self):
        v2 = self.peer(register="inventory-v2")
        client = self.peer(name="shop-ui")
        self.assertIs(self.round_trip(client, [v2], "inventory", action="get"), v2)
        ev = client.send(bp.msg("event", "shop-ui", "inventory", "restocked"))
        frames, _ = v2.recv()
        self.assertEqual(frames[-1], bp.dumps(ev))

    def test_old_service_serves_until_the_new_one_is_up(self):
        old = self.peer(register="inventory")
        client = self.peer(name="shop-ui")
        self.assertIs(self.round_trip(client, [old], "inventory"), old)
        v2 = self.peer(register="inventory-v2")
        for _ in range(3):
            self.assertIs(self.round_trip(client, [old, v2], "inventory"), v2)

    def test_no_instance_of_either_name_gets_no_such_service(self):
        client = self.peer(name="shop-ui")
        req = client.request("user-service")
        self.expectError(client, "no_such_service", correlation_id=req["msg_id"])


class CanaryTest(ExampleCase):
    EXAMPLE = "canary.lua"

    def spread(self, client, services, n, dst="checkout"):
        """Sends n requests at once; returns {service name: requests it got}."""
        reqs = [client.request(dst, payload={"i": i}) for i in range(n)]
        counts = {}
        for inst, _, body in self.receive_on(services, n):
            counts[inst.name] = counts.get(inst.name, 0) + 1
            inst.answer(body)
        ids = {r["msg_id"] for r in reqs}
        for _ in range(n):
            _, body = client.recv()
            self.assertEqual(body["type"], "response", bp.dump(body))
            ids.discard(body["correlation_id"])
        self.assertEqual(ids, set(), "requests without an answer")
        return counts

    def test_without_a_canary_everything_goes_to_the_service(self):
        stable = self.peer(register="checkout")
        client = self.peer(name="shop-ui")
        self.assertEqual(self.spread(client, [stable], 30), {"checkout": 30})

    def test_ten_percent_go_to_the_canary(self):
        stable = self.peer(register="checkout")
        canary = self.peer(register="checkout-canary")
        client = self.peer(name="shop-ui")
        self.assertEqual(self.spread(client, [stable, canary], 200),
                         {"checkout": 180, "checkout-canary": 20})

    def test_events_and_other_services_are_not_split(self):
        self.peer(register="checkout")
        canary = self.peer(register="checkout-canary")
        cart = self.peer(register="cart")
        client = self.peer(name="shop-ui")
        self.assertEqual(self.spread(client, [cart, canary], 20, dst="cart"), {"cart": 20})
        for _ in range(20):
            client.send(bp.msg("event", "shop-ui", "checkout", "tick"))
        canary.expect_nothing(0.3)


def fnv1a(data):
    h = 2166136261
    for byte in data:
        h = ((h ^ byte) * 16777619) & 0xFFFFFFFF
    return h


class AffinityTest(ExampleCase):
    EXAMPLE = "affinity.lua"
    IDS = ["cart-a", "cart-b", "cart-c"]

    def instances(self):
        """The cart service's instances; each has .ident, its ZeroMQ identity."""
        out = []
        for i in self.IDS:
            p = self.peer(identity=i, register="cart")
            p.ident = i
            out.append(p)
        return out

    def expected_owner(self, cart_id, ids):
        """The instance affinity.lua must pick: the highest rendezvous score."""
        return max(ids, key=lambda i: fnv1a(("%s\0%s" % (cart_id, i)).encode()))

    def owners(self, client, instances, carts):
        """Sends one request per cart_id (all at once); returns {cart_id: instance identity}."""
        for c in carts:
            client.request("cart", action="add", payload={"cart_id": c, "sku": 1})
        got = {}
        for inst, _, body in self.receive_on(instances, len(carts)):
            c = body["payload"]["cart_id"]
            self.assertNotIn(c, got, "one request per cart was sent")
            got[c] = inst.ident
            inst.answer(body)
        client.drain(0.1)
        return got

    def test_same_cart_same_instance(self):
        instances = self.instances()
        client = self.peer(name="shop-ui")
        carts = ["c-%d" % n for n in range(12)]
        first = self.owners(client, instances, carts)
        self.assertEqual(first, {c: self.expected_owner(c, self.IDS) for c in carts})
        self.assertGreater(len(set(first.values())), 1, "every cart on one instance")
        for _ in range(2):
            self.assertEqual(self.owners(client, instances, carts), first)

    def test_when_an_instance_leaves_only_its_carts_move(self):
        instances = self.instances()
        client = self.peer(name="shop-ui")
        carts = ["c-%d" % n for n in range(24)]
        before = self.owners(client, instances, carts)
        gone = instances.pop()
        gone.unregister("cart")
        after = self.owners(client, instances, carts)
        for c in carts:
            if before[c] != gone.ident:
                self.assertEqual(after[c], before[c], "cart %s moved" % c)
            self.assertEqual(after[c], self.expected_owner(c, self.IDS[:2]))

    def test_without_the_field_requests_go_round_robin(self):
        instances = self.instances()
        client = self.peer(name="shop-ui")
        for _ in range(6):
            client.request("cart", action="list", payload={"user": "u1"})
        got = [inst.ident for inst, _, _ in self.receive_on(instances, 6)]
        self.assertEqual(sorted(got), sorted(self.IDS * 2))


class RateLimitTest(ExampleCase):
    EXAMPLE = "rate_limit.lua"
    LIMIT = 20

    def start_of_a_second(self):
        """Waits until early in a wall-clock second (the policy's window is os.time())."""
        while not 0.05 < time.time() % 1 < 0.4:
            time.sleep(0.01)

    def test_over_the_limit_gets_denied_rate_limit(self):
        svc = self.peer(register="search")
        burst = self.peer(name="burst-client")
        calm = self.peer(name="calm-client")
        self.start_of_a_second()
        second = int(time.time())
        reqs = [burst.request("search", payload={"i": i}) for i in range(self.LIMIT + 10)]
        calm_req = calm.request("search")
        for r in reqs[self.LIMIT:]:
            body = self.expectError(burst, "denied", correlation_id=r["msg_id"])
            self.assertEqual(body["payload"]["message"], "rate limit")
        ping = burst.call_broker("ping", src="burst-client")
        self.assertEqual(int(time.time()), second, "the burst took too long")
        self.assertEqual(ping["type"], "response", "requests to the broker are not counted")
        delivered = self.receive_on([svc], self.LIMIT + 1)
        svc.expect_nothing(0.2)
        self.assertEqual(sorted(b["msg_id"] for _, _, b in delivered),
                         sorted([r["msg_id"] for r in reqs[:self.LIMIT]] + [calm_req["msg_id"]]))
        # the next second starts a new count (a margin: time() in C may lag
        # the precise clock by a tick)
        while time.time() < second + 1.05:
            time.sleep(0.01)
        self.round_trip(burst, [svc], "search")


class LeastLoadedTest(ExampleCase):
    EXAMPLE = "least_loaded.lua"

    def test_requests_go_to_the_instance_with_fewer_in_flight(self):
        a = self.peer(identity="work-a", register="work")
        b = self.peer(identity="work-b", register="work")
        client = self.peer(name="shop-ui")
        held = client.request("work", action="slow")
        [(busy, _, held_body)] = self.receive_on([a, b], 1)
        idle = b if busy is a else a
        for _ in range(5):
            self.assertIs(self.round_trip(client, [a, b], "work"), idle)
        busy.answer(held_body)
        client.recv_answer(held["msg_id"])
        # both idle again: they take turns
        got = [self.round_trip(client, [a, b], "work") for _ in range(4)]
        self.assertEqual(got.count(a), 2, "idle instances take turns")
        self.assertEqual(got.count(b), 2, "idle instances take turns")


class AclTest(ExampleCase):
    EXAMPLE = "acl.lua"

    def refused(self, client, dst, action):
        req = client.request(dst, action=action)
        return self.expectError(client, "denied", correlation_id=req["msg_id"])["payload"]["message"]

    def test_listed_actions_only_from_their_senders(self):
        inventory = self.peer(register="inventory")
        ledger = self.peer(register="ledger")
        web = self.peer(name="web")
        warehouse = self.peer(name="warehouse")
        payments = self.peer(name="payment-service")
        self.assertEqual(self.refused(web, "inventory", "restock"), "web may not call inventory restock")
        self.assertEqual(self.refused(web, "ledger", "refund"), "web may not call ledger refund")
        self.assertEqual(self.refused(web, "inventory", "delete"), "web may not call inventory delete",
                         "a listed service is closed except for what it lists")
        inventory.expect_nothing(0.1)
        ledger.expect_nothing(0.1)
        self.assertIs(self.round_trip(warehouse, [inventory], "inventory", action="restock"), inventory)
        self.assertIs(self.round_trip(web, [inventory], "inventory", action="stock"), inventory)
        self.assertIs(self.round_trip(payments, [ledger], "ledger", action="refund"), ledger)
        self.assertIs(self.round_trip(web, [ledger], "ledger", action="balance"), ledger)

    def test_services_not_listed_are_open(self):
        orders = self.peer(register="orders")
        web = self.peer(name="web")
        self.assertIs(self.round_trip(web, [orders], "orders", action="anything"), orders)


class ComposedTest(ExampleCase):
    """composed.lua's five rules in the real broker: deny, rate_limit,
    schema, canary, breaker, each deciding in turn."""
    EXAMPLE = "composed.lua"

    def test_deny_then_schema_then_pass(self):
        orders = self.peer(register="orders")
        scraper = self.peer(name="legacy-scraper")
        ui = self.peer(name="shop-ui")
        req = scraper.request("orders", action="create", payload={"sku": "a", "qty": 1})
        body = self.expectError(scraper, "denied", correlation_id=req["msg_id"])
        self.assertEqual(body["payload"]["message"], "this client is retired: use catalog-api")
        req = ui.request("orders", action="create", payload={"sku": "a", "qty": 0})
        body = self.expectError(ui, "bad_payload", correlation_id=req["msg_id"])
        self.assertEqual(body["payload"]["message"], "orders create: field 'qty' must be at least 1")
        req = ui.request("orders", action="create", payload={"qty": 2})
        body = self.expectError(ui, "bad_payload", correlation_id=req["msg_id"])
        self.assertEqual(body["payload"]["message"], "orders create: field 'sku' is required")
        orders.expect_nothing(0.1)
        self.assertIs(self.round_trip(ui, [orders], "orders", action="create",
                                      payload={"sku": "a", "qty": 2}), orders)

    def test_rate_limit_before_schema(self):
        orders = self.peer(register="orders")
        flood = self.peer(name="flood-client")
        start = time.monotonic()
        reqs = [flood.request("orders", action="list") for _ in range(70)]
        # over its rate, a sender is refused before its payload is looked at
        bad = flood.request("orders", action="create", payload={"qty": 0})
        reqs.append(bad)
        # orders answers what reaches it; flood gets 70 answers or refusals
        poller = zmq.Poller()
        poller.register(orders.sock, zmq.POLLIN)
        poller.register(flood.sock, zmq.POLLIN)
        answers = {}
        deadline = time.monotonic() + 5 * bp.SLOW
        while len(answers) < len(reqs) and time.monotonic() < deadline:
            for sock, _ in poller.poll(100):
                body = bp.loads(sock.recv_multipart()[-1])
                if sock is orders.sock:
                    orders.answer(body)
                else:
                    answers[body["correlation_id"]] = body
        elapsed = time.monotonic() - start
        self.assertEqual(len(answers), len(reqs), "requests without an answer")
        self.assertEqual(answers[bad["msg_id"]]["payload"]["message"], "rate limit",
                         "elapsed %.2f s" % elapsed)
        passed = [a for a in answers.values() if a["type"] == "response"]
        refused = [a for a in answers.values() if a["type"] == "error"]
        for body in refused:
            self.assertError(body, "denied")
            self.assertEqual(body["payload"]["message"], "rate limit")
        # a burst of 50, then 20 a second
        self.assertGreaterEqual(len(passed), 50)
        self.assertLessEqual(len(passed), 50 + int(20 * elapsed) + 1, "elapsed %.2f s" % elapsed)
        self.assertGreaterEqual(len(refused), 2, "elapsed %.2f s" % elapsed)
        # another sender has its own bucket
        other = self.peer(name="calm-client")
        self.assertIs(self.round_trip(other, [orders], "orders", action="list"), orders)

    def test_canary_sticky_and_breaker_fallback(self):
        checkout = self.peer(register="checkout")
        canary = self.peer(register="checkout-canary")
        ui = self.peer(name="shop-ui")
        first = self.round_trip(ui, [checkout, canary], "checkout")
        for _ in range(4):
            self.assertIs(self.round_trip(ui, [checkout, canary], "checkout"), first,
                          "a sender stays on its side")
        payments = self.peer(register="payments")
        fallback = self.peer(register="payments-fallback")
        for _ in range(5):
            req = ui.request("payments", action="charge")
            [(inst, _, body)] = self.receive_on([payments, fallback], 1)
            self.assertIs(inst, payments)
            payments.answer(body, type="error", payload={"code": "internal", "message": "down"})
            ui.recv_answer(req["msg_id"])
        self.assertTrue(self.b.wait_for_log(r"breaker payments: open \(5 bad outcomes", 3 * bp.SLOW),
                        self.b.log_text())
        for _ in range(3):
            self.assertIs(self.round_trip(ui, [payments, fallback], "payments", action="charge"),
                          fallback)


class ExampleFilesTest(unittest.TestCase):
    """Static checks with luac5.4: each example compiles, defines only hooks as
    globals and reads only what the sandbox provides (no typos)."""

    def test_examples_define_no_stray_globals(self):
        luac = shutil.which("luac5.4")
        if not luac:
            self.skipTest("luac5.4 not installed")
        files = sorted(f for f in os.listdir(EXAMPLES) if f.endswith(".lua"))
        self.assertGreaterEqual(len(files), 6, files)
        for f in files:
            out = subprocess.run([luac, "-p", "-l", "-l", os.path.join(EXAMPLES, f)],
                                 capture_output=True, text=True, check=True).stdout
            sets = set(re.findall(r'SETTABUP.*; _ENV "(\w+)"', out))
            gets = set(re.findall(r'GETTABUP.*; _ENV "(\w+)"', out))
            # hooks are defined as globals, or by the library's policy.use{}
            self.assertTrue(sets or "policy.use" in open(os.path.join(EXAMPLES, f)).read() or
                            re.search(r'GETFIELD.*"use"', out), "%s defines no hook" % f)
            self.assertLessEqual(sets, HOOKS, "%s sets globals other than hooks" % f)
            self.assertLessEqual(gets, SANDBOX_GLOBALS | HOOKS,
                                 "%s reads globals the sandbox lacks" % f)


if __name__ == "__main__":
    bp.main()
