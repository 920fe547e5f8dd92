"""T8: hosted Lua services (docs/protocol.md section 6), against a broker
that hosts the suite's services, fixtures/services/ (ct-lua, ct-lua-noreq:
their headers say what each does):

    smartshop-broker --services tests/conformance/fixtures/services ...
    run.py --profile lua
"""

from bus import BusTest, env, profile, uname


class HostedServices(BusTest):

    def hosted(self, p, name):
        self.assertTrue(self.wait_until(lambda: self.instances(p, name) >= 1, 2.0),
                        "the hosted service %s is not registered" % name)

    def service_error(self, cli, dst, action, code="service_error"):
        m = cli.send(env("request", cli.name, dst, action, {"n": 1}))
        r = self.expect(cli, 2.0, "the service's error for %s" % action)
        self.assertEqual(r.get("type"), "error", r.raw)
        self.assertEqual(r.get("src"), dst, "from the service, not the broker: %s" % r.raw)
        self.assertEqual(r.get("correlation_id"), m["msg_id"], r.raw)
        self.assertIsInstance(r.get("payload"), dict, r.raw)
        self.assertEqual(r["payload"].get("code"), code, r.raw)
        return r

    @profile("lua")
    def test_T8_hosted_service_is_a_peer(self):
        cli = self.peer(uname("cli"), shape=3)
        self.hosted(cli, "ct-lua")
        m = cli.send(env("request", cli.name, "ct-lua", "echo", {"a": [1, 2.50, "x"]}))
        r = self.expect_response(cli, m["msg_id"], "echo")
        self.assertEqual(r.frames[:-1], [b""], "in the requester's shape (F2)")
        self.assertEqual((r["src"], r["dst"]), ("ct-lua", cli.name), r.raw)
        self.assertEqual(r["payload"], m["payload"], r.raw)
        # it holds its name: nobody else may speak as it (S2)
        other = self.peer()
        m = other.send(env("request", "ct-lua", "broker", "ping"))
        self.expect_error(other, "spoofed_src", corr=m["msg_id"])
        # an event to it is delivered like any event: never answered (T5)
        cli.send(env("event", cli.name, "ct-lua", "note"))
        self.expect_nothing(cli, 0.2, "an event is not answered")

    @profile("lua")
    def test_T8_failing_handler_answers_service_error(self):
        cli = self.peer(uname("cli"))
        self.hosted(cli, "ct-lua")
        self.hosted(cli, "ct-lua-noreq")
        for dst, action in (("ct-lua", "raise"), ("ct-lua", "loop"), ("ct-lua", "memory"),
                            ("ct-lua", "not_json"), ("ct-lua-noreq", "work")):
            with self.subTest(dst=dst, action=action):
                r = self.service_error(cli, dst, action)
                self.assertIsInstance(r["payload"].get("message"), str, r.raw)
        # the service still runs; an error with a code of its own is allowed
        self.service_error(cli, "ct-lua", "own_code", code="ct_own_code")
        m = cli.send(env("request", cli.name, "ct-lua", "echo", {"n": 2}))
        self.assertEqual(self.expect_response(cli, m["msg_id"])["payload"], {"n": 2})
        # service_error is not a broker error: the broker's counts do not have it
        self.assertNotIn("service_error", self.stats(cli)["errors"])
        self.expect_nothing(cli, 0.1)
