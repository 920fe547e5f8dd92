#!/usr/bin/python3
"""Malformed input is answered with an error, never a crash.

Codes: bad_frames (F3), bad_json (E1), too_large (E2), bad_envelope (E3, E4),
unsupported_version (V1). Each test also checks the broker still answers.
"""
import json
import os
import sys
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import brokerproc as bp  # noqa: E402


def ping_bytes(msg_id=None, payload_text="null", extra_text=""):
    """A ping request to the broker as raw JSON text with a raw payload."""
    msg_id = msg_id or str(uuid.uuid4())
    return ('{"msg_id":"%s","type":"request","src":"raw-client","dst":"broker","action":"ping",'
            '"payload":%s%s}' % (msg_id, payload_text, extra_text)).encode("utf-8")


class InputTestCase(bp.BrokerTestCase):
    def assertStillAnswers(self, p=None):
        p = p or self.peer()
        body = p.call_broker("ping", src="alive-check")
        self.assertEqual(body["type"], "response", bp.dump(body))
        self.assertAlive()

    def assertRawError(self, raw, code, correlation_id="any", delimiter=False):
        p = self.peer()
        p.send(raw, delimiter=delimiter)
        body = self.expectError(p, code, correlation_id=correlation_id)
        self.assertStillAnswers(p)
        return body


class BadFramesTest(InputTestCase):
    def test_two_data_frames_are_bad_frames(self):
        self.assertRawError([ping_bytes(), b"extra"], "bad_frames", correlation_id=None)

    def test_junk_frame_before_json_is_bad_frames(self):
        self.assertRawError([b"x", ping_bytes()], "bad_frames", correlation_id=None)

    def test_delimiter_then_two_data_frames_is_bad_frames(self):
        self.assertRawError([b"", b"x", b"y"], "bad_frames", correlation_id=None)

    def test_three_data_frames_are_bad_frames(self):
        self.assertRawError([ping_bytes(), ping_bytes(), ping_bytes()], "bad_frames",
                            correlation_id=None)

    def test_empty_data_frame_is_bad_frames(self):
        self.assertRawError([b""], "bad_frames", correlation_id=None)

    def test_delimiter_then_empty_data_frame_is_bad_frames(self):
        self.assertRawError([b"", b""], "bad_frames", correlation_id=None)

    def test_many_frames_do_not_crash(self):
        self.assertRawError([b"f%d" % i for i in range(50)], "bad_frames", correlation_id=None)


class BadJsonTest(InputTestCase):
    CASES = {
        "not_json": b"hello",
        "truncated_object": b'{"msg_id":"a","type":"request"',
        "single_quotes": b"{'msg_id':'a'}",
        "trailing_comma": ping_bytes(extra_text=","),
        "trailing_garbage": ping_bytes() + b" x",
        "two_objects": ping_bytes() + ping_bytes(),
        "bad_payload_inside": ping_bytes(payload_text='{"a":}'),
        "leading_zero_number": ping_bytes(payload_text="01"),
        "nan": ping_bytes(payload_text="NaN"),
        "comment": ping_bytes(payload_text="/* c */ 1"),
        "bad_escape": ping_bytes(payload_text='"\\q"'),
        "short_unicode_escape": ping_bytes(payload_text='"\\u12"'),
        "raw_control_char_in_string": ping_bytes(payload_text='"a\x01b"'),
        "raw_newline_in_string": ping_bytes(payload_text='"a\nb"'),
        "deep_nesting_200": ping_bytes(payload_text="[" * 200 + "]" * 200),
    }
    BYTE_CASES = {
        "invalid_utf8_ff": b"\xff",
        "overlong_slash": b"\xc0\xaf",
        "overlong_3byte": b"\xe0\x80\xaf",
        "utf8_encoded_surrogate": b"\xed\xa0\x80",
        "above_10ffff": b"\xf4\x90\x80\x80",
        "truncated_sequence": b"\xe2\x82",
        "lone_continuation": b"\x80",
    }

    def test_malformed_json_is_bad_json(self):
        for name, raw in self.CASES.items():
            with self.subTest(case=name):
                self.assertRawError(raw, "bad_json", correlation_id=None)

    def test_bad_utf8_in_payload_string_is_bad_json(self):
        for name, seq in self.BYTE_CASES.items():
            raw = ping_bytes(payload_text='"ok' + "\x00" + '"').replace(b"\x00", seq)
            with self.subTest(case=name):
                self.assertRawError(raw, "bad_json", correlation_id=None)

    def test_bad_utf8_in_unknown_key_is_bad_json(self):
        raw = ping_bytes(extra_text=',"kX":1').replace(b'"kX"', b'"k\xff"')
        self.assertRawError(raw, "bad_json", correlation_id=None)

    def test_json_that_is_not_an_object_is_bad_envelope(self):
        # E1 (docs/protocol.md): well-formed JSON that is not an object.
        for raw in (b"[1,2]", b"null", b"42", b'"str"', b"true", b"[]"):
            with self.subTest(raw=raw):
                self.assertRawError(raw, "bad_envelope", correlation_id=None)

    def test_nesting_depth_64_is_accepted_and_65_is_bad_json(self):
        # The top-level object is depth 1; the payload adds the rest.
        p = self.peer()
        mid = str(uuid.uuid4())
        p.send(ping_bytes(msg_id=mid, payload_text="[" * 63 + "]" * 63))
        _, body = p.recv()
        self.assertEqual(body["type"], "response", "depth 64 refused: " + bp.dump(body))
        self.assertRawError(ping_bytes(payload_text="[" * 64 + "]" * 64), "bad_json",
                            correlation_id=None)
        self.assertRawError(ping_bytes(payload_text='{"a":' * 64 + "1" + "}" * 64), "bad_json",
                            correlation_id=None)

    def test_valid_utf8_and_whitespace_are_accepted(self):
        p = self.peer()
        mid = str(uuid.uuid4())
        payload = ('{"th":"\u0e01\U0001F600","esc":"\\u0e01\\ud83d\\ude00\\n\\"",'
                   '"n":[-1.5e3,0,true,null,{}]}')
        raw = b" \n\t" + ping_bytes(msg_id=mid, payload_text=payload) + b" \r\n"
        p.send(raw)
        _, body = p.recv()
        self.assertEqual(body["type"], "response", bp.dump(body))
        self.assertEqual(body["correlation_id"], mid)

    def test_moderate_nesting_is_accepted(self):
        p = self.peer()
        mid = str(uuid.uuid4())
        p.send(ping_bytes(msg_id=mid, payload_text="[" * 20 + "]" * 20))
        _, body = p.recv()
        self.assertEqual(body["type"], "response", bp.dump(body))


class TooLargeTest(InputTestCase):
    LIMIT = 512
    BROKER_ARGS = ("--max-message-bytes", str(LIMIT))

    def padded_ping(self, size, msg_id=None):
        base = ping_bytes(msg_id=msg_id, extra_text=',"pad":""')
        pad = size - len(base)
        self.assertGreaterEqual(pad, 0)
        return base[:-2] + b"x" * pad + b'"}'

    def test_message_of_exactly_the_limit_is_accepted(self):
        p = self.peer()
        mid = str(uuid.uuid4())
        raw = self.padded_ping(self.LIMIT, msg_id=mid)
        self.assertEqual(len(raw), self.LIMIT)
        p.send(raw)
        _, body = p.recv()
        self.assertEqual(body["type"], "response", bp.dump(body))
        self.assertEqual(body["correlation_id"], mid)

    def test_one_byte_over_the_limit_is_too_large(self):
        raw = self.padded_ping(self.LIMIT + 1)
        self.assertRawError(raw, "too_large", correlation_id=None)

    def test_too_large_is_answered_in_three_frame_shape_too(self):
        p = self.peer()
        p.send(self.padded_ping(self.LIMIT * 4), delimiter=True)
        frames, body = p.recv()
        self.assertError(body, "too_large", correlation_id=None)
        self.assertEqual(len(frames), 2, frames)
        self.assertEqual(frames[0], b"")

    def test_huge_message_is_too_large(self):
        self.assertRawError(self.padded_ping(2 * 1024 * 1024), "too_large", correlation_id=None)

    def test_frame_over_the_hard_ceiling_does_not_hurt_the_broker(self):
        # E2: past max(4x the limit, 16 MiB) libzmq closes the connection
        # instead of reading the frame. The broker must live on.
        p = self.peer()
        p.send(self.padded_ping(16 * 1024 * 1024 + 1024))
        frames = p.recv_raw(1.0)
        if frames is not None:
            self.assertError(bp.loads(frames[-1]), "too_large", correlation_id=None)
        self.assertStillAnswers()

    def test_too_large_invalid_json_is_too_large(self):
        # The broker does not read an oversize message (E2): size is checked first.
        self.assertRawError(b"{" * (self.LIMIT + 10), "too_large", correlation_id=None)


class DefaultSizeLimitTest(InputTestCase):
    def padded_ping(self, size, msg_id=None):
        base = ping_bytes(msg_id=msg_id, extra_text=',"pad":""')
        return base[:-2] + b"x" * (size - len(base)) + b'"}'

    def test_default_limit_is_one_mebibyte(self):
        p = self.peer()
        mid = str(uuid.uuid4())
        p.send(self.padded_ping(1048576, msg_id=mid))
        _, body = p.recv(5)
        self.assertEqual(body["type"], "response", bp.dump(body)[:300])
        p.send(self.padded_ping(1048577))
        self.expectError(p, "too_large", correlation_id=None, timeout=5)


class BadEnvelopeTest(InputTestCase):
    def send_fields(self, fields, raw=None):
        p = self.peer()
        p.send(raw if raw is not None else json.dumps(fields).encode())
        _, body = p.recv()
        return p, body

    def base(self, **over):
        m = {"msg_id": str(uuid.uuid4()), "type": "request", "src": "env-client",
             "dst": "broker", "action": "ping"}
        m.update(over)
        return {k: v for k, v in m.items() if v is not Ellipsis}

    def assertEnvelopeError(self, fields, correlated=True, raw=None, code="bad_envelope"):
        p, body = self.send_fields(fields, raw)
        mid = fields.get("msg_id") if correlated else None
        self.assertError(body, code, correlation_id=mid)
        self.assertStillAnswers(p)
        return body

    def test_missing_msg_id_is_bad_envelope_uncorrelated(self):
        self.assertEnvelopeError(self.base(msg_id=...), correlated=False)

    def test_invalid_msg_id_is_bad_envelope_uncorrelated(self):
        for bad in ("", "has space", "x" * 129, 'q"uote', "back\\slash", "t\u00e9", 42, None,
                    ["a"]):
            with self.subTest(msg_id=bad):
                self.assertEnvelopeError(self.base(msg_id=bad), correlated=False)

    def test_msg_id_of_128_printable_bytes_is_accepted(self):
        mid = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in '"\\')
        mid = (mid * 2)[:128]
        p, body = self.send_fields(self.base(msg_id=mid))
        self.assertEqual(body["type"], "response", bp.dump(body))
        self.assertEqual(body["correlation_id"], mid)

    def test_missing_or_unknown_type_is_bad_envelope(self):
        for t in (..., "bogus", "Request", 5, None):
            with self.subTest(type=t):
                self.assertEnvelopeError(self.base(type=t))

    def test_missing_or_non_string_src_is_bad_envelope(self):
        for s in (..., 5, None, ["a"]):
            with self.subTest(src=s):
                self.assertEnvelopeError(self.base(src=s))

    def test_request_without_dst_is_bad_envelope(self):
        body = self.assertEnvelopeError(self.base(dst=...))
        self.assertEqual(body["dst"], "env-client")

    def test_request_without_action_is_bad_envelope(self):
        for a in (..., None, 7):
            with self.subTest(action=a):
                self.assertEnvelopeError(self.base(action=a))

    def test_event_without_dst_is_bad_envelope(self):
        self.assertEnvelopeError(self.base(type="event", dst=...))

    def test_response_without_correlation_id_is_bad_envelope(self):
        for c in (..., None, 12, "has space"):
            with self.subTest(correlation_id=c):
                self.assertEnvelopeError(self.base(type="response", dst="someone",
                                                   correlation_id=c))

    def test_error_without_correlation_id_is_bad_envelope(self):
        self.assertEnvelopeError(self.base(type="error", dst="someone",
                                           payload={"code": "x", "message": "y"}))

    def test_wrongly_typed_optional_fields_are_bad_envelope(self):
        for field, value in (("timestamp", 5), ("correlation_id", 5), ("timestamp", {})):
            with self.subTest(field=field, value=value):
                self.assertEnvelopeError(self.base(**{field: value}))

    def test_request_to_broadcast_is_bad_envelope(self):
        self.assertEnvelopeError(self.base(dst="broadcast", action="do"))

    def test_bad_ttl_ms_is_bad_envelope(self):
        for ttl in (0, -1, 300001, "100", 1.5, True, None, [1]):
            with self.subTest(ttl_ms=ttl):
                self.assertEnvelopeError(self.base(ttl_ms=ttl))

    def test_ttl_ms_in_range_is_accepted(self):
        for ttl in (1, 300000):
            with self.subTest(ttl_ms=ttl):
                m = self.base(ttl_ms=ttl)
                p, body = self.send_fields(m)
                self.assertEqual(body["type"], "response", bp.dump(body))

    def test_duplicate_top_level_key_is_bad_envelope(self):
        mid = str(uuid.uuid4())
        raw = ('{"msg_id":"%s","type":"request","src":"env-client","src":"other",'
               '"dst":"broker","action":"ping"}' % mid).encode()
        self.assertEnvelopeError({"msg_id": mid}, raw=raw)

    def test_escaped_top_level_key_is_bad_envelope(self):
        mid = str(uuid.uuid4())
        raw = ('{"msg_id":"%s","type":"request","src":"env-client","\\u0073rc":"other",'
               '"dst":"broker","action":"ping"}' % mid).encode()
        self.assertEnvelopeError({"msg_id": mid}, raw=raw)

    def test_escaped_unknown_top_level_key_is_bad_envelope(self):
        mid = str(uuid.uuid4())
        raw = ('{"msg_id":"%s","type":"request","src":"env-client","x\\n":1,'
               '"dst":"broker","action":"ping"}' % mid).encode()
        self.assertEnvelopeError({"msg_id": mid}, raw=raw)

    def test_more_than_64_top_level_keys_is_bad_envelope(self):
        m = self.base()
        for i in range(65 - len(m)):
            m["k%02d" % i] = i
        self.assertEqual(len(m), 65)
        self.assertEnvelopeError(m)

    def test_64_top_level_keys_are_accepted(self):
        m = self.base()
        for i in range(64 - len(m)):
            m["k%02d" % i] = i
        self.assertEqual(len(m), 64)
        p, body = self.send_fields(m)
        self.assertEqual(body["type"], "response", bp.dump(body))

    def test_dst_of_register_is_not_checked(self):
        for dst in ("not a name", 5, None, "broadcast"):
            with self.subTest(dst=dst):
                m = {"msg_id": str(uuid.uuid4()), "type": "register", "src": "reg-any-dst",
                     "dst": dst, "action": "register"}
                p, body = self.send_fields(m)
                self.assertEqual(body["type"], "response", bp.dump(body))

    def test_ttl_ms_is_ignored_on_other_types(self):
        svc = self.peer(register="ttl-ignorer")
        p = self.peer()
        m = p.send(bp.msg("event", "ttl-sender", "ttl-ignorer", "tick", ttl_ms="soon"))
        frames, got = svc.recv()
        self.assertEqual(got["msg_id"], m["msg_id"])
        p.expect_nothing(0.2)

    def test_error_action_is_null_unless_plain_short_string(self):
        # T6: the offender's action only if a non-empty string of at most
        # 128 bytes written without escapes.
        for action, expected in (("get_info", "get_info"), ("", None), ("a" * 129, None),
                                 ("a" * 128, "a" * 128)):
            with self.subTest(action=action[:10]):
                m = self.base(dst="nobody-here", action=action)
                p, body = self.send_fields(m)
                self.assertError(body, "no_such_service", correlation_id=m["msg_id"],
                                 action=expected)
        mid = str(uuid.uuid4())
        raw = ('{"msg_id":"%s","type":"request","src":"env-client","dst":"nobody-here",'
               '"action":"get\\u005finfo"}' % mid).encode()
        p, body = self.send_fields({}, raw=raw)
        self.assertError(body, "no_such_service", correlation_id=mid, action=None)

    def test_error_names_offenders_src_and_action(self):
        m = self.base(ttl_ms=0, action="ping")
        p, body = self.send_fields(m)
        self.assertError(body, "bad_envelope", correlation_id=m["msg_id"], dst="env-client",
                         action="ping")


class VersionTest(InputTestCase):
    def test_version_1_is_accepted(self):
        p = self.peer()
        m = p.send(bp.msg("request", "v-client", "broker", "ping", v=1))
        _, body = p.recv_answer(m["msg_id"])
        self.assertEqual(body["type"], "response", bp.dump(body))

    def test_other_version_is_unsupported_version(self):
        for v in (0, 2, 99, "1", None, 1.5, [1]):
            with self.subTest(v=v):
                p = self.peer()
                m = p.send(bp.msg("request", "v-client", "broker", "ping", v=v))
                self.expectError(p, "unsupported_version", correlation_id=m["msg_id"])


if __name__ == "__main__":
    bp.main()
