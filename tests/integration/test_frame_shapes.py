#!/usr/bin/python3
"""2-frame ([identity, json]) and 3-frame ([identity, "", json]) peers are each
answered and forwarded to in the shape they used last (F1, F2, the seed's
troubleshooting #1); forwarded messages are the very bytes sent (E5, E6)."""
import os
import sys

import zmq

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import brokerproc as bp  # noqa: E402

# Unusual spacing and an unknown field: a re-encoding broker would change these bytes.
ODD_REQUEST = ('{ "msg_id" : "%s", "type":"request", "src":"%s", "dst":"%s", "action":"echo",'
               ' "payload":{"b":2,"a":[1, 2.50, "\\u0e01"]}, "x-trace" : {"hop": 1} }')


class FrameShapeTest(bp.BrokerTestCase):
    def assertTwoFrame(self, frames):
        self.assertEqual(len(frames), 1, "expected [json], got %r" % frames)

    def assertThreeFrame(self, frames):
        self.assertEqual(len(frames), 2, "expected ['', json], got %r" % frames)
        self.assertEqual(frames[0], b"")

    def test_two_frame_peer_is_answered_with_one_frame(self):
        p = self.peer()
        m = p.request("broker", "ping", src="two-frame")
        frames, body = p.recv()
        self.assertTwoFrame(frames)
        self.assertEqual(body["correlation_id"], m["msg_id"])

    def test_three_frame_peer_is_answered_with_delimiter(self):
        p = self.peer()
        m = p.request("broker", "ping", src="three-frame", delimiter=True)
        frames, body = p.recv()
        self.assertThreeFrame(frames)
        self.assertEqual(body["correlation_id"], m["msg_id"])

    def test_register_answer_follows_the_shape(self):
        p2, p3 = self.peer(), self.peer()
        p2.send(bp.msg("register", "shape-reg-2", "broker", "register"))
        p3.send(bp.msg("register", "shape-reg-3", "broker", "register"), delimiter=True)
        self.assertTwoFrame(p2.recv()[0])
        self.assertThreeFrame(p3.recv()[0])

    def test_errors_follow_the_shape(self):
        p2, p3 = self.peer(), self.peer()
        p2.send(b"{nope")
        p3.send(b"{nope", delimiter=True)
        frames2, body2 = p2.recv()
        frames3, body3 = p3.recv()
        self.assertError(body2, "bad_json")
        self.assertError(body3, "bad_json")
        self.assertTwoFrame(frames2)
        self.assertThreeFrame(frames3)

    def test_three_frame_client_and_two_frame_service(self):
        svc = self.peer(register="svc-two")  # registered in 2-frame shape
        client = self.peer()
        mid = bp.new_id("odd")
        raw = (ODD_REQUEST % (mid, "client-three", "svc-two")).encode("utf-8")
        client.send(raw, delimiter=True)
        frames, got = svc.recv()
        self.assertTwoFrame(frames)
        self.assertEqual(frames[-1], raw, "request not forwarded byte for byte")
        answer = svc.answer(got)
        frames, body = client.recv()
        self.assertThreeFrame(frames)
        self.assertEqual(frames[-1], bp.dumps(answer), "response not forwarded byte for byte")
        self.assertEqual(body["correlation_id"], mid)

    def test_two_frame_client_and_three_frame_service(self):
        svc = self.peer()
        svc.register("svc-three", delimiter=True)
        client = self.peer()
        mid = bp.new_id("odd")
        raw = (ODD_REQUEST % (mid, "client-two", "svc-three")).encode("utf-8")
        client.send(raw)
        frames, got = svc.recv()
        self.assertThreeFrame(frames)
        self.assertEqual(frames[-1], raw)
        answer = bp.msg("response", "svc-three", "client-two", "echo", payload=got["payload"],
                        correlation_id=mid)
        svc.send(answer, delimiter=True)
        frames, body = client.recv()
        self.assertTwoFrame(frames)
        self.assertEqual(frames[-1], bp.dumps(answer))

    def test_shape_follows_the_most_recent_message(self):
        p = self.peer()
        p.request("broker", "ping", src="switcher", delimiter=True)
        self.assertThreeFrame(p.recv()[0])
        p.request("broker", "ping", src="switcher")
        self.assertTwoFrame(p.recv()[0])
        p.request("broker", "ping", src="switcher", delimiter=True)
        self.assertThreeFrame(p.recv()[0])

    def test_events_reach_each_receiver_in_its_own_shape(self):
        r2 = self.peer(register="ev-two")
        r3 = self.peer()
        r3.register("ev-three", delimiter=True)
        sender = self.peer()
        e2 = sender.send(bp.msg("event", "ev-sender", "ev-two", "tick"), delimiter=True)
        e3 = sender.send(bp.msg("event", "ev-sender", "ev-three", "tick"))
        frames, _ = r2.recv()
        self.assertTwoFrame(frames)
        self.assertEqual(frames[-1], bp.dumps(e2))
        frames, _ = r3.recv()
        self.assertThreeFrame(frames)
        self.assertEqual(frames[-1], bp.dumps(e3))

    def test_req_socket_client_works_unchanged(self):
        req = self.peer(sock_type=zmq.REQ)
        for _ in range(3):  # REQ must get exactly one reply per request, in its shape
            m = req.send(bp.msg("request", "req-client", "broker", "ping"))
            frames, body = req.recv()
            self.assertEqual(len(frames), 1)  # REQ strips the delimiter itself
            self.assertEqual(body["correlation_id"], m["msg_id"])

    def test_req_socket_client_reaches_a_dealer_service(self):
        svc = self.peer(register="for-req")
        req = self.peer(sock_type=zmq.REQ)
        m = req.send(bp.msg("request", "req-client-2", "for-req", "echo", payload={"k": 1}))
        frames, got = svc.recv()
        self.assertTwoFrame(frames)
        svc.answer(got, payload=got["payload"])
        _, body = req.recv()
        self.assertEqual(body["correlation_id"], m["msg_id"])
        self.assertEqual(body["payload"], {"k": 1})


if __name__ == "__main__":
    bp.main()
