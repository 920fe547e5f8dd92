"""N3: names under CURVE (docs/protocol.md section 5), and the operator
actions under CURVE (section 15), against a broker started with CURVE:

    run.py --profile curve --curve-server-key broker.pub --curve-client-keys DIR

DIR holds three client key pairs (alice, bob, admin: NAME.pub and NAME.key
as `smartshop-broker --keygen DIR/NAME` writes them), and the broker's
allow list gives them (section 17):

    <alice.pub>  ct-alice-* ct-shared-*
    <bob.pub>    ct-bob-* ct-shared-*
    <admin.pub>  ct-admin-* @admin

Peers use alice's pair unless a test says otherwise.
"""

import zmq

from bus import BusTest, env, new_id, profile, uname


class Curve(BusTest):

    def register_refused(self, p, name, code):
        m = p.send(env("register", name, "broker", "register", {}))
        self.expect_error(p, code, corr=m["msg_id"])

    @profile("curve")
    def test_N3_only_listed_keys_complete_a_handshake(self):
        listed = self.peer(uname("alice"))
        self.assertEqual(self.ping(listed), set())
        stranger = self.peer(uname("alice"), key=zmq.curve_keypair())
        plain = self.peer(uname("alice"), key=False)
        for p in (stranger, plain):
            p.send(env("request", p.name, "broker", "ping"))
            p.send(env("register", p.name, "broker", "register", {}))
        self.expect_nothing_all([stranger, plain], 0.5, "no message for an unlisted key or a plain peer")
        self.assertEqual(self.instances(listed, stranger.name), 0)
        self.assertEqual(self.instances(listed, plain.name), 0)

    @profile("curve")
    def test_N3_allow_list_denies_a_name(self):
        alice = self.peer(uname("alice"))
        self.register(alice)                               # ct-alice-*
        self.register(alice, uname("shared"))              # ct-shared-*
        for name in (uname("bob"), uname("admin"), uname("other"), "alice"):
            with self.subTest(name=name):
                self.register_refused(alice, name, "denied")
                obs = self.peer(uname("alice"))
                self.assertEqual(self.instances(obs, name), 0, "nothing registered")
        self.assertEqual(len(self.ping(alice)), 2)
        # another key is given other names
        bob = self.peer(uname("bob"), key="bob")
        self.register(bob)
        self.register_refused(bob, uname("alice"), "denied")

    @profile("curve")
    def test_N3_name_taken_under_another_key(self):
        shared = uname("shared")
        a1 = self.peer(shared)
        self.register(a1)
        bob = self.peer(shared, key="bob")
        self.register_refused(bob, shared, "name_taken")
        self.assertEqual(self.ping(bob, uname("bob")), set(), "nothing registered")
        a2 = self.peer(shared)                   # the same key: another instance
        self.register(a2)
        self.assertEqual(self.instances(a1, shared), 2)
        self.register_refused(bob, shared, "name_taken")
        # once no connection with the other key holds it, bob may
        for p in (a1, a2):
            self.unregister(p, shared)
        self.register(bob, shared)
        late = self.peer(shared)
        self.register_refused(late, shared, "name_taken")

    @profile("curve")
    def test_N3_operator_actions_need_an_admin_key(self):
        # section 15: with CURVE, reload_policy, dead_letters, replay and
        # watch are refused with denied unless the key is marked @admin
        alice = self.peer(uname("alice"))
        admin = self.peer(uname("admin"), key="admin")
        for action, payload in (("dead_letters", None), ("replay", {"id": 10 ** 12}),
                                ("watch", None), ("reload_policy", None)):
            with self.subTest(action=action):
                m = alice.send(env("request", alice.name, "broker", action, payload))
                self.expect_error(alice, "denied", corr=m["msg_id"])
                m = admin.send(env("request", admin.name, "broker", action, payload))
                self.expect_response(admin, m["msg_id"], action)
        for action in ("ping", "list_services", "stats", "metrics", "unwatch"):
            with self.subTest(action=action):
                m = alice.send(env("request", alice.name, "broker", action))
                self.expect_response(alice, m["msg_id"], action)
        # the refused watch had no effect: alice gets no copies
        ev = admin.send(env("event", admin.name, "broadcast", "note", msg_id=new_id()))
        self.expect_nothing(alice, 0.3, "no watch copy of %s for a refused watch" % ev["msg_id"])
