"""E1-E6 and V1: the envelope and versions (docs/protocol.md sections 4, 12)."""

import json

from bus import BusTest, env, enc, new_id, uname, CONFIG


def nested(depth, src):
    """A top-level object of the given nesting depth (the object itself is depth 1)."""
    inner = "[" * (depth - 1) + "]" * (depth - 1)
    return ('{"msg_id":"%s","type":"event","src":"%s","dst":"broadcast","payload":%s}'
            % (new_id(), src, inner or "0")).encode()


class Envelope(BusTest):

    def roundtrip_ok(self, p, data):
        """data is a valid ping request to the broker; expect its answer."""
        p.send_bytes(data)
        r = self.expect(p)
        self.assertEqual(r.get("type"), "response", r.raw)
        return r

    def test_E1_malformed_json_is_bad_json(self):
        mid = new_id()
        head = '{"msg_id":"%s","type":"request","src":"%s","dst":"broker","action":"ping"' % (mid, uname("e1"))
        cases = {
            "truncated": head.encode(),
            "trailing comma": (head + ",}").encode(),
            "trailing garbage": (head + "} x").encode(),
            "two objects": (head + "}{}").encode(),
            "single quotes": b"{'msg_id':'a'}",
            "NaN": (head + ',"payload":NaN}').encode(),
            "leading zero": (head + ',"payload":01}').encode(),
            "bare word": (head + ',"payload":tru}').encode(),
            "not json": b"hello",
            "raw control char": (head + ',"payload":"a\x01b"}').encode(),
            "raw tab in string": (head + ',"payload":"a\tb"}').encode(),
            "lone high surrogate escape": (head + ',"payload":"\\ud800"}').encode(),
            "lone low surrogate escape": (head + ',"payload":"\\udc00x"}').encode(),
            "high surrogate without its low half": (head + ',"payload":"\\ud800\\u0041"}').encode(),
            "raw NUL": (head + ',"payload":"a\x00b"}').encode(),
            "bad escape": (head + ',"payload":"\\x41"}').encode(),
        }
        p = self.peer()
        for label, data in cases.items():
            with self.subTest(label):
                p.send_bytes(data)
                r = self.expect_error(p, "bad_json", corr=None)
                self.assertIsNone(r.get("dst"), r.raw)
        # well-formed JSON that is not an object: the envelope is missing
        for data in (b"[1,2]", b'"x"', b"1", b"null", b' [{"msg_id":"a"}] '):
            with self.subTest(data=data):
                p.send_bytes(data)
                self.expect_error(p, "bad_envelope", corr=None)
        self.assert_alive()

    def test_E1_invalid_utf8_is_bad_json(self):
        head = '{"msg_id":"%s","type":"request","src":"%s","dst":"broker","action":"ping","payload":"' % (new_id(), uname("e1"))
        cases = {
            "overlong 2-byte": b"\xc0\xaf",
            "overlong 3-byte": b"\xe0\x80\xaf",
            "encoded surrogate": b"\xed\xa0\x80",
            "above U+10FFFF": b"\xf4\x90\x80\x80",
            "byte 0xFF": b"\xff",
            "truncated sequence": b"\xe2\x82",
            "lone continuation": b"\x80",
        }
        p = self.peer()
        for label, bad in cases.items():
            with self.subTest(label):
                p.send_bytes(head.encode() + bad + b'"}')
                self.expect_error(p, "bad_json", corr=None)
        # valid multi-byte UTF-8 is fine
        p.send_bytes(head.encode() + "é € 😀".encode() + b'"}')
        r = self.expect(p)
        self.assertEqual(r.get("type"), "response", r.raw)

    def test_E1_nesting_depth_at_most_64(self):
        p = self.peer(uname("e1d"))
        self.register(p)
        p.send_bytes(nested(65, p.name))
        self.expect_error(p, "bad_json", corr=None)
        # depth 64 is well-formed: a broadcast with no complaint
        p.send_bytes(nested(64, p.name))
        self.expect_nothing(p, what="no error for depth 64")

    def test_E2_oversize_is_too_large(self):
        p = self.peer(uname("e2"))
        base = env("request", p.name, "broker", "ping", payload="")
        pad = CONFIG.max_bytes + 1 - len(enc(base))
        base["payload"] = "x" * pad
        data = enc(base)
        self.assertEqual(len(data), CONFIG.max_bytes + 1)
        p.send_bytes(data)
        self.expect_error(p, "too_large", corr=None, timeout=2.0)
        # exactly the limit is accepted
        base = env("request", p.name, "broker", "ping", payload="")
        base["payload"] = "x" * (CONFIG.max_bytes - len(enc(base)))
        data = enc(base)
        self.assertEqual(len(data), CONFIG.max_bytes)
        p.send_bytes(data)
        self.expect_response(p, base["msg_id"], timeout=2.0)

    def test_E3_duplicate_escaped_or_too_many_keys_is_bad_envelope(self):
        src = uname("e3")
        h = '{"msg_id":"%s","type":"request","src":"%s","dst":"broker","action":"ping"' % (new_id(), src)
        cases = {
            "escaped duplicate src": h + ',"\\u0073rc":"other"}',
            "plain duplicate src": h + ',"src":"%s"}' % src,
            "duplicate unknown key": h + ',"x":1,"x":2}',
            "escaped unknown key": h + ',"\\u0078":1}',
            "escaped msg_id key": '{"\\u006dsg_id":"%s","type":"request","src":"%s","dst":"broker","action":"ping"}' % (new_id(), src),
            "65 keys": h + "".join(',"k%d":0' % i for i in range(60)) + "}",
        }
        self.assertEqual(len(json.loads(cases["65 keys"])), 65)
        p = self.peer()
        for label, data in cases.items():
            with self.subTest(label):
                p.send_bytes(data.encode())
                self.expect_error(p, "bad_envelope")
        # exactly 64 keys is fine
        ok = env("request", src, "broker", "ping", **{"k%d" % i: 0 for i in range(59)})
        self.assertEqual(len(ok), 64)
        p.send(ok)
        self.expect_response(p, ok["msg_id"])

    def test_E4_field_types_and_required_fields(self):
        src = uname("e4")
        good = lambda **kw: dict(env("request", src, "broker", "ping"), **kw)
        mid = new_id()
        resp = lambda **kw: dict(env("response", src, uname("x"), "a", correlation_id=new_id(), msg_id=mid), **kw)
        drop = lambda m, k: {a: b for a, b in m.items() if a != k}
        cases = {
            # (message, expected correlation_id: Ellipsis = the msg_id, None = null)
            "msg_id missing": (drop(good(), "msg_id"), None),
            "msg_id number": (good(msg_id=5), None),
            "msg_id empty": (good(msg_id=""), None),
            "msg_id with space": (good(msg_id="a b"), None),
            "msg_id 129 bytes": (good(msg_id="m" * 129), None),
            "msg_id non-ascii": (good(msg_id="é"), None),
            "type missing": (drop(good(), "type"), ...),
            "type unknown": (good(type="query"), ...),
            "type not a string": (good(type=1), ...),
            "src missing": (drop(good(), "src"), ...),
            "src not a string": (good(src=7), ...),
            "dst missing on request": (drop(good(), "dst"), ...),
            "dst not a string": (good(dst=["broker"]), ...),
            "action missing on request": (drop(good(), "action"), ...),
            "action not a string": (good(action=1), ...),
            "correlation_id missing on response": (drop(resp(), "correlation_id"), ...),
            "correlation_id number": (resp(correlation_id=3), ...),
            "correlation_id with quote": (resp(correlation_id='a"b'), ...),
            "timestamp number": (good(timestamp=1), ...),
            "ttl_ms zero": (good(ttl_ms=0), ...),
            "ttl_ms above 300000": (good(ttl_ms=300001), ...),
            "ttl_ms negative": (good(ttl_ms=-5), ...),
            "ttl_ms fraction": (good(ttl_ms=1.5), ...),
            "ttl_ms string": (good(ttl_ms="100"), ...),
            "action number on event": (env("event", src, uname("x"), 5), ...),
        }
        p = self.peer()
        for label, (m, corr) in cases.items():
            with self.subTest(label):
                p.send(m)
                if corr is ...:
                    corr = m["msg_id"]
                self.expect_error(p, "bad_envelope", corr=corr)
        # the escaped spelling of a type is not that type
        p.send_bytes(('{"msg_id":"%s","type":"\\u0072equest","src":"%s","dst":"broker","action":"ping"}'
                      % (new_id(), src)).encode())
        self.expect_error(p, "bad_envelope")

    def test_E4_valid_forms_accepted(self):
        p = self.peer()
        src = uname("e4ok")
        oks = [
            env("request", src, "broker", "ping", msg_id="m" * 128),
            env("request", src, "broker", "ping", msg_id="!#$%&'()*+,-./:;<=>?@[]^_`{|}~"),
            env("request", src, "broker", "ping", ttl_ms=1),
            env("request", src, "broker", "ping", ttl_ms=300000),
            dict(env("request", src, "broker", "ping"), correlation_id=None, timestamp=None, payload=None),
            env("request", src, "broker", "ping", payload=[1, {"a": None}], timestamp="2024-01-01T00:00:00Z"),
        ]
        for m in oks:
            with self.subTest(m=m):
                p.send(m)
                self.expect_response(p, m["msg_id"], "ping")
        # register needs no dst (E4: optional for register/unregister)
        name = uname("e4r")
        m = p.send({"msg_id": new_id(), "type": "register", "src": name})
        self.expect_response(p, m["msg_id"], "register")

    def test_E5_unknown_fields_forwarded_untouched(self):
        svc, cli = self.service_and_client()
        m = env("request", cli.name, svc.name, "work", {"a": 1}, trace={"span": "s-1", "tags": ["x", 2]},
                x_custom=None, zzz=1.5)
        data = enc(m)
        cli.send_bytes(data)
        r = self.expect(svc)
        self.assertEqual(r.raw, data)
        self.assertEqual(r.msg["trace"], {"span": "s-1", "tags": ["x", 2]})

    def test_E6_forwarded_as_the_very_bytes(self):
        svc, cli = self.service_and_client()
        mid = new_id()
        data = ('\r\n {  "payload" : { "n": 1.0E+2, "s": "caf\\u00e9 \\ud83d\\ude00", "z": -0 } ,\n'
                '\t"dst":"%s", "action" :"work","type": "request" ,"src":"%s","msg_id":"%s",'
                '"timestamp":null}  \n' % (svc.name, cli.name, mid)).encode()
        cli.send_bytes(data)
        r = self.expect(svc)
        self.assertEqual(r.raw, data)
        # and the answer, unchanged, back to the requester
        ans = ('{"type":"response",  "correlation_id":"%s","msg_id":"%s","src":"%s","dst":"%s",'
               '"payload":{"k":[ ]}}' % (mid, new_id(), svc.name, cli.name)).encode()
        svc.send_bytes(ans)
        back = self.expect(cli)
        self.assertEqual(back.raw, ans)

    def test_V1_version_other_than_1_is_unsupported(self):
        p = self.peer()
        src = uname("v1")
        for v in (2, 0, "1", 1.5, None):
            with self.subTest(v=v):
                m = p.send(env("request", src, "broker", "ping", v=v))
                self.expect_error(p, "unsupported_version", corr=m["msg_id"])
        m = p.send(env("request", src, "broker", "ping", v=1))
        self.expect_response(p, m["msg_id"])
        m = p.send(env("request", src, "broker", "ping"))
        self.expect_response(p, m["msg_id"])
