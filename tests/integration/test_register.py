#!/usr/bin/python3
"""Registration: register / unregister answers (T1, T2), instances, several
names per connection, and identities that cannot be taken over (L1)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import brokerproc as bp  # noqa: E402


class RegisterTest(bp.BrokerTestCase):
    def test_register_answer_has_the_documented_shape(self):
        p = self.peer(identity=b"reg-shape")
        m = p.send(bp.msg("register", "reg-shape", "broker", "register"))
        _, body = p.recv()
        self.assertEqual(body["type"], "response", bp.dump(body))
        self.assertEqual(body["src"], "broker")
        self.assertEqual(body["dst"], "reg-shape")
        self.assertEqual(body["action"], "register")
        self.assertEqual(body["correlation_id"], m["msg_id"])
        self.assertEqual(body["payload"], {"status": "ok", "name": "reg-shape"})
        self.assertRegex(body["msg_id"], bp.UUID_RE)
        self.assertRegex(body["timestamp"], bp.TIMESTAMP_RE)

    def test_register_without_dst_or_action_is_fine(self):
        p = self.peer()
        m = {"msg_id": bp.new_id(), "type": "register", "src": "reg-minimal"}
        p.send(m)
        _, body = p.recv()
        self.assertEqual(body["type"], "response", bp.dump(body))
        self.assertEqual(body["correlation_id"], m["msg_id"])

    def test_register_is_idempotent(self):
        p = self.peer()
        p.register("reg-twice")
        p.register("reg-twice")
        self.assertEqual(bp.services(p).get("reg-twice"), 1)

    def test_one_connection_may_hold_several_names(self):
        p = self.peer()
        for n in ("multi-c", "multi-a", "multi-b"):
            p.register(n)
        body = p.call_broker("ping", src="multi-a")
        self.assertEqual(sorted(body["payload"]["registered"]), ["multi-a", "multi-b", "multi-c"])
        svcs = bp.services(p)
        for n in ("multi-a", "multi-b", "multi-c"):
            self.assertEqual(svcs.get(n), 1)

    def test_several_connections_may_register_one_name(self):
        for i in range(3):
            self.peer(identity="inst-%d" % i, register="shared-name")
        self.assertEqual(bp.services(self.peer()).get("shared-name"), 3)

    def test_unregister_answers_and_removes_the_name(self):
        p = self.peer(register="going-away")
        p.register("staying")
        m = p.send(bp.msg("unregister", "going-away", "broker", "unregister"))
        _, body = p.recv()
        self.assertEqual(body["type"], "response", bp.dump(body))
        self.assertEqual(body["action"], "unregister")
        self.assertEqual(body["correlation_id"], m["msg_id"])
        self.assertEqual(body["payload"].get("status"), "ok")
        svcs = bp.services(self.peer())
        self.assertNotIn("going-away", svcs)
        self.assertEqual(svcs.get("staying"), 1)
        body = p.call_broker("ping", src="staying")
        self.assertEqual(body["payload"]["registered"], ["staying"])

    def test_unregister_one_instance_keeps_the_others(self):
        a = self.peer(register="half-gone")
        self.peer(register="half-gone")
        a.unregister("half-gone")
        self.assertEqual(bp.services(self.peer()).get("half-gone"), 1)

    def test_a_second_connection_with_an_identity_in_use_cannot_take_over(self):
        first = self.peer(identity=b"taken-identity", register="owner-f")
        second = self.peer(identity=b"taken-identity")
        second.send(bp.msg("request", "intruder-f", "broker", "ping"))
        second.send(bp.msg("register", "owner-f", "broker", "register"))
        second.expect_nothing(0.5)
        # The first connection still owns its name and its traffic.
        client = self.peer()
        req = client.request("owner-f", "do", src="client-f")
        _, got = first.recv()
        self.assertEqual(got["msg_id"], req["msg_id"])
        self.assertEqual(bp.services(client).get("owner-f"), 1)

    def test_ping_of_an_unregistered_peer_lists_no_names(self):
        p = self.peer()
        body = p.call_broker("ping", src="nobody-yet")
        self.assertEqual(body["payload"], {"status": "ok", "registered": []})


if __name__ == "__main__":
    bp.main()
