"""N4 and P1: policies as seen on the wire (docs/protocol.md sections 5 and
11), and the hooks' part of B1-B3, against a broker running the suite's own
policy, fixtures/policy.lua (its header says what each hook does):

    smartshop-broker --policy tests/conformance/fixtures/policy.lua ...
    run.py --profile policy
"""

from bus import BusTest, SENT_IDS, enc, env, new_id, profile, uname


class Policy(BusTest):

    # --- helpers ---

    def hooks_seen(self, msg_id):
        """The hooks that saw the message msg_id, in order, as the policy noted
        them (only for messages whose action contains "ct-trace")."""
        if not hasattr(self, "_reporter"):
            rep, snd = self.peer(uname("rep")), self.peer(uname("repc"))
            self.register(rep)
            self._reporter = (rep, snd)
        rep, snd = self._reporter
        m = snd.send(env("event", snd.name, rep.name, "ct-report", {"of": msg_id}))
        while True:       # skip the broadcasts of the test itself
            r = self.expect(rep, what="the policy's report")
            if r["msg_id"] == m["msg_id"]:
                self.assertIsInstance(r.get("ct_trace"), str, r.raw)
                return r["ct_trace"]
            self.assertEqual(r["dst"], "broadcast", r.raw)

    def alias_pair(self):
        """A service ct-real-X and the alias ct-alias-X the policy routes to it."""
        tail = new_id()[:8]
        svc = self.peer("ct-real-" + tail)
        self.register(svc)
        return svc, "ct-alias-" + tail

    def refused(self, p, m, code):
        p.send(m)
        r = self.expect_error(p, code, corr=m["msg_id"])
        self.assertEqual(r["action"], m["action"], "T6: action copied: %s" % r.raw)
        return m

    # --- N4 ---

    @profile("policy")
    def test_N4_on_register_refusal_denied_failure_policy_error(self):
        p = self.peer(uname("n4"))
        obs = self.peer(uname("obs"))
        for name, code in ((uname("deny"), "denied"), (uname("fail"), "policy_error")):
            with self.subTest(name=name):
                m = p.send(env("register", name, "broker", "register", {}))
                self.expect_error(p, code, corr=m["msg_id"])
                self.assertEqual(self.instances(obs, name), 0, "nothing registered")
        self.assertEqual(self.ping(p), set())
        self.register(p)                       # a name the hook accepts

    @profile("policy")
    def test_N4_checked_after_idempotence(self):
        name = uname("once")                   # the hook accepts it once only
        a = self.peer(name)
        self.register(a)
        self.register(a)                       # held: T1 answers before the hook is asked
        b = self.peer(name)
        m = b.send(env("register", name, "broker", "register", {}))
        self.expect_error(b, "denied", corr=m["msg_id"])
        self.assertEqual(self.instances(a, name), 1)

    # --- P1: the order ---

    @profile("policy")
    def test_P1_hook_order_authorize_filter_route(self):
        svc, alias = self.alias_pair()
        cli = self.peer(uname("cli"))
        # a request to a service: authorize, filter (which rewrites it), then
        # route on the rewritten message (else it would not reach ct-real-X)
        m = cli.send(env("request", cli.name, alias, "ct-trace", {"n": 1}))
        r = self.expect(svc, what="the aliased request")
        self.assertEqual((r["msg_id"], r["dst"]), (m["msg_id"], alias), r.raw)
        self.assertEqual(r.get("ct_hooks"), "authorize,filter", "hooks before filter's rewrite: %s" % r.raw)
        self.assertEqual(self.hooks_seen(m["msg_id"]), "authorize,filter,route")
        # its answer: authorize and filter, no route (it follows correlation_id)
        a = svc.send(env("response", svc.name, cli.name, "ct-trace", {"ok": 1}, correlation_id=m["msg_id"]))
        got = self.expect_response(cli, m["msg_id"])
        self.assertEqual(got["msg_id"], a["msg_id"])
        self.assertEqual(self.hooks_seen(a["msg_id"]), "authorize,filter")
        # an event to a service name: routed too
        e = cli.send(env("event", cli.name, alias, "ct-trace"))
        self.assertEqual(self.expect(svc, what="the aliased event")["msg_id"], e["msg_id"])
        self.assertEqual(self.hooks_seen(e["msg_id"]), "authorize,filter,route")
        # to "broker" and to "broadcast": authorize and filter, never route
        b = cli.send(env("request", cli.name, "broker", "ct-trace"))
        self.expect_error(cli, "unknown_action", corr=b["msg_id"])
        self.assertEqual(self.hooks_seen(b["msg_id"]), "authorize,filter")
        bc = cli.send(env("event", cli.name, "broadcast", "ct-trace"))
        r = self.expect(svc, what="the broadcast")
        self.assertEqual((r["msg_id"], r.get("ct_hooks")), (bc["msg_id"], "authorize,filter"), r.raw)
        self.assertEqual(self.hooks_seen(bc["msg_id"]), "authorize,filter")

    @profile("policy")
    def test_P1_checks_stop_at_the_first_refusal(self):
        svc, alias = self.alias_pair()
        cli = self.peer(uname("cli"))
        # the broker's own checks come before any hook
        for m, code in ((env("request", svc.name, alias, "ct-trace"), "spoofed_src"),
                        (env("event", svc.name, "broadcast", "ct-trace"), "spoofed_src"),
                        (env("request", "broker.x", alias, "ct-trace"), "reserved_name")):
            with self.subTest(code=code, type=m["type"]):
                self.refused(cli, m, code)
                self.assertEqual(self.hooks_seen(m["msg_id"]), "", "no hook saw it")
        for action, code, seen in (("ct-deny-authorize", "denied", "authorize"),
                                   ("ct-fail-authorize", "policy_error", "authorize"),
                                   ("ct-deny-filter", "denied", "authorize,filter"),
                                   ("ct-fail-filter", "policy_error", "authorize,filter")):
            with self.subTest(action=action):
                m = env("request", cli.name, alias, "ct-trace " + action)
                self.refused(cli, m, code)
                self.assertEqual(self.hooks_seen(m["msg_id"]), seen)
        m = env("request", cli.name, "ct-routefail-" + new_id()[:8], "ct-trace")
        self.refused(cli, m, "policy_error")
        self.assertEqual(self.hooks_seen(m["msg_id"]), "authorize,filter,route")
        self.expect_nothing(svc, 0.1, "no refused message delivered")

    # --- P1: denied and policy_error are not delivered ---

    @profile("policy")
    def test_P1_policy_error_and_denied_not_delivered(self):
        tail = new_id()[:8]
        targets = {}
        for name in ("ct-x-" + tail, "ct-routefail-" + tail, "ct-routebad-" + tail):
            targets[name] = self.peer(name)
            self.register(targets[name])
        cli = self.peer(uname("cli"))
        cases = [("ct-x-" + tail, "ct-deny-authorize", "denied"),
                 ("ct-x-" + tail, "ct-deny-filter", "denied"),
                 ("ct-x-" + tail, "ct-fail-authorize", "policy_error"),
                 ("ct-x-" + tail, "ct-fail-filter", "policy_error"),
                 ("ct-routefail-" + tail, "work", "policy_error"),
                 ("ct-routebad-" + tail, "work", "policy_error")]
        for type_ in ("request", "event"):
            for dst, action, code in cases:
                with self.subTest(type=type_, dst=dst, action=action):
                    self.refused(cli, env(type_, cli.name, dst, action, {"n": 1}), code)
        # to the broker's own service too (B1: it passes authorize and filter)
        for action, code in (("ct-deny-authorize", "denied"), ("ct-fail-filter", "policy_error")):
            with self.subTest(dst="broker", action=action):
                self.refused(cli, env("request", cli.name, "broker", action), code)
        self.expect_nothing_all(list(targets.values()), 0.2, "nothing delivered")
        # a refused answer is not delivered and leaves its request in flight
        svc = targets["ct-x-" + tail]
        m, got = self.send_request(cli, svc)
        for action, code in (("ct-deny-filter", "denied"), ("ct-fail-authorize", "policy_error")):
            with self.subTest(answer=action):
                self.refused(svc, env("response", svc.name, cli.name, action, {"no": 1},
                                      correlation_id=m["msg_id"]), code)
        self.expect_nothing(cli, 0.1, "no refused answer delivered")
        self.answer(svc, got.msg)
        self.expect_response(cli, m["msg_id"])

    # --- P1: aliased, fanned out, rewritten ---

    @profile("policy")
    def test_P1_aliased_message_forwarded_as_its_bytes(self):
        svc, alias = self.alias_pair()
        cli = self.peer(uname("cli"))
        mid = new_id()
        SENT_IDS.add(mid)
        data = ('{ "type" : "request", "msg_id":"%s", "src":"%s",\n "dst":"%s", "action":"work",'
                ' "payload":{"a":[1, 2.50, "\\u00e9/"]}, "x-extra":{"k":null} }'
                % (mid, cli.name, alias)).encode()
        cli.send_bytes(data)
        r = self.expect(svc, what="the aliased request")
        self.assertEqual(r.raw, data, "forwarded as the bytes it came with, dst not rewritten")
        self.answer(svc, r.msg)
        self.expect_response(cli, mid)
        # a request to an unaliased name passes the hooks untouched, too
        m = cli.send(env("request", cli.name, svc.name, "work", {"b": [1, 2.50]}))
        r = self.expect(svc, what="the plain request")
        self.assertEqual((r["msg_id"], r.raw), (m["msg_id"], enc(m)))

    @profile("policy")
    def test_P1_fanned_out_event_forwarded_as_its_bytes(self):
        tail = new_id()[:8]
        fan_a, fan_b = self.peer("ct-fana-" + tail), self.peer("ct-fanb-" + tail)
        self.register(fan_a)
        self.register(fan_b)
        cli = self.peer(uname("cli"))
        mid = new_id()
        SENT_IDS.add(mid)
        data = ('{"msg_id":"%s" ,"type":"event","src":"%s","dst":"ct-fan-%s","action":"note",'
                '"payload":{"x":1.50},"x-extra":[]}' % (mid, cli.name, tail)).encode()
        cli.send_bytes(data)
        for p in (fan_a, fan_b):
            self.assertEqual(self.expect(p, what="the fanned-out event").raw, data)
        self.expect_nothing_all([fan_a, fan_b, cli], 0.1, "one copy each, no answer")
        # a request to a list of names: the first with a live instance, once
        m = cli.send(env("request", cli.name, "ct-fan-" + tail, "work"))
        r = self.expect(fan_a, what="the request at the first name")
        self.assertEqual(r["msg_id"], m["msg_id"])
        self.expect_nothing(fan_b, 0.1, "exactly one instance gets a request")
        self.answer(fan_a, r.msg)
        self.expect_response(cli, m["msg_id"])
        fan_a.close()
        self.assertTrue(self.wait_until(lambda: self.instances(cli, "ct-fana-" + tail) == 0))
        m = cli.send(env("request", cli.name, "ct-fan-" + tail, "work"))
        r = self.expect(fan_b, what="the request at the next name")
        self.assertEqual((r["msg_id"], r["dst"]), (m["msg_id"], "ct-fan-" + tail))

    @profile("policy")
    def test_P1_message_changed_by_filter_is_re_encoded(self):
        svc, alias = self.alias_pair()
        cli = self.peer(uname("cli"))
        m = cli.send(env("request", cli.name, alias, "ct-mark", {"n": [1, "two"]}, x_extra="kept"))
        r = self.expect(svc, what="the rewritten request")
        self.assertIs(r.get("ct_marked"), True, r.raw)
        for k in ("msg_id", "type", "src", "dst", "action", "payload", "x_extra"):
            self.assertEqual(r.get(k), m[k], "%s in %s" % (k, r.raw))
        self.answer(svc, r.msg)
        self.expect_response(cli, m["msg_id"])
        # a rewrite that changes msg_id, type or src, or is no envelope: policy_error
        for what in ("msg_id", "type", "src", "invalid"):
            for type_ in ("request", "event"):
                with self.subTest(rewrite=what, type=type_):
                    self.refused(cli, env(type_, cli.name, alias, "ct-rewrite-" + what), "policy_error")
        self.expect_nothing(svc, 0.1, "no bad rewrite delivered")

    # --- the hooks in B1-B3 ---

    @profile("policy")
    def test_B1_reload_policy_names_the_hooks(self):
        p = self.peer(uname("b1"))
        r = self.call_broker(p, "reload_policy")
        self.assertEqual(r["payload"].get("status"), "ok", r.raw)
        self.assertEqual(set(r["payload"]["hooks"].split()),
                         {"authorize", "filter", "route", "on_register"}, r.raw)

    @profile("policy")
    def test_B2_replay_passes_the_hooks_again(self):
        svc, alias = self.alias_pair()
        cli = self.peer(uname("cli"))
        m = self.refused(cli, env("request", cli.name, alias, "ct-trace ct-deny-filter"), "denied")
        letter = self.find_letter(cli, m["msg_id"], "denied")
        self.assertIsNotNone(letter, "a refused message is a dead letter")
        ops = self.peer(uname("ops"))
        self.assertEqual(self.replay(ops, letter["id"]).get("status"), "ok")
        self.expect_error(cli, "denied", corr=m["msg_id"])
        self.assertEqual(self.hooks_seen(m["msg_id"]), "authorize,filter,authorize,filter")
        self.expect_nothing(svc, 0.1)

    @profile("policy")
    def test_B3_watch_copy_is_the_event_as_filtered(self):
        w = self.peer(uname("b3w"))
        self.assertEqual(self.call_broker(w, "watch")["payload"], {"status": "ok"})
        svc, alias = self.alias_pair()
        cli = self.peer(uname("cli"))
        m = cli.send(env("event", cli.name, alias, "ct-mark"))
        for p in (svc, w):
            r = self.expect(p, what="the rewritten event")
            self.assertEqual((r["msg_id"], r.get("ct_marked")), (m["msg_id"], True), r.raw)
        for action in ("ct-deny-authorize", "ct-deny-filter"):
            self.refused(cli, env("event", cli.name, alias, action), "denied")
        self.expect_nothing_all([svc, w], 0.2, "no copy of an event refused by a hook")
