"""A peer that never reads (item 10).

The broker's per-peer bound was --send-hwm messages (1000), whatever their
size: a peer that registered a name and stopped reading made the broker
hold 1000 x the message size (~1 GiB at the 1 MiB limit), and nothing
bounded the sum over peers. Now the bytes handed to each peer and not yet
taken by its kernel (TCP_INFO tcpi_bytes_acked) are counted: past
--max-queued-bytes for the peer or --max-queued-bytes-total for all of
them the peer is full (the sender gets `busy`, a broadcast copy is dropped
and counted) until it drains (docs/security.md, "Bytes per connection").

The never-reading peer is a DEALER that takes one message into its own
queue (RCVHWM 1) with a small kernel buffer and then reads nothing, and
sends heartbeats so that the broker does not drop it: the rest stays in
the broker. The broker's memory is read from /proc.
"""
import os
import sys
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "integration"))
import brokerproc as bp  # noqa: E402

MiB = 1 << 20
PAYLOAD = "x" * (256 * 1024)            # an event of ~256 KiB
EVENT_BYTES = len(PAYLOAD) + 300
# ASan keeps freed memory in quarantine (256 MiB by default) and its
# caches: the refused messages, freed, would look like growth
os.environ["ASAN_OPTIONS"] = (os.environ.get("ASAN_OPTIONS", "") + ":quarantine_size_mb=0"
                              ":thread_local_quarantine_size_kb=0"
                              ":allocator_release_to_os_interval_ms=10").lstrip(":")
# what a peer that never reads may cost: 16 MiB queued, what its own
# buffers took, the allocator's slack (ASan's is larger)
GROWTH_LIMIT = 80 * MiB * (2.5 if bp.SLOW > 1 else 1)


def proc_status(pid, key):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no %s in /proc/%d/status" % (key, pid))


class NeverReader(bp.FreshBrokerTestCase):

    def start(self, *args):
        self.b = bp.Broker(args=args)
        self.pid = self.b.proc.pid
        self.base = proc_status(self.pid, "VmRSS")

    def sink(self, name):
        # heartbeats of its own keep it connected: a peer that sends
        # nothing is dropped by the broker's heartbeat timeout once its
        # PINGs stop getting through, but one that keeps sending is not
        return self.peer(register=name, options={bp.zmq.RCVHWM: 1, bp.zmq.RCVBUF: 65536,
                                                 bp.zmq.HEARTBEAT_IVL: 500,
                                                 bp.zmq.HEARTBEAT_TIMEOUT: 600000})

    def flood(self, sender, names, count):
        """Sends `count` events round the names; returns how many `busy`
        answers came (a count only: under load some may come late)."""
        busy = 0
        for i in range(count):
            sender.send(bp.msg("event", sender.name, names[i % len(names)], "blob",
                               payload={"b": PAYLOAD}))
            for frames in sender.drain(0):
                body = bp.loads(frames[-1])
                self.assertEqual(bp.error_code(body), "busy", bp.dump(body))
                busy += 1
        return busy

    def taken(self, sink):
        """Reads what the broker handed to a sink: the events it took."""
        got = 0
        while True:
            frames = sink.recv_raw(1.0 * bp.SLOW)
            if frames is None:
                return got
            got += bp.loads(frames[-1]).get("action") == "blob"

    def test_one_peer_that_never_reads(self):
        self.start()
        sink = self.sink("sink")
        sender = self.peer(register="sender")
        reader = self.peer(register="reader")
        busy = self.flood(sender, ["sink"], 400)         # 100 MiB offered
        # the others are not held up: a small event reaches a reading peer at once
        t0 = time.monotonic()
        sender.send(bp.msg("event", "sender", "reader", "small", payload={}))
        _, body = reader.recv(2 * bp.SLOW)
        self.assertEqual(body.get("action"), "small")
        latency = time.monotonic() - t0
        self.assertLess(latency, 0.5 * bp.SLOW)
        growth = proc_status(self.pid, "VmHWM") - self.base
        got = self.taken(sink)
        sys.stderr.write("[measured: %d of 400 taken, peak growth %.1f MiB, a reader's event "
                         "in %.1f ms] " % (got, growth / MiB, latency * 1000))
        self.assertGreater(busy, 0, "no send was refused")
        # 16 MiB queued, plus what the sink's own buffers took
        self.assertLess(got * EVENT_BYTES, 20 * MiB)
        self.assertLess(growth, GROWTH_LIMIT,
                        "the broker grew by %d MiB for a peer that never reads" % (growth >> 20))
        # once the sink has read, it is no longer full
        sender.drain(0.2)
        deadline = time.monotonic() + 3 * bp.SLOW
        while True:
            sender.send(bp.msg("event", "sender", "sink", "again", payload={"b": PAYLOAD}))
            frames = sink.recv_raw(0.5 * bp.SLOW)
            if frames is not None:
                self.assertEqual(bp.loads(frames[-1]).get("action"), "again")
                break
            sender.drain(0.05)
            self.assertLess(time.monotonic(), deadline, "the sink stayed full after reading")

    def test_total_over_all_peers(self):
        # each sink may hold 8 MiB; together they may hold 20
        self.start("--max-queued-bytes", str(8 * MiB), "--max-queued-bytes-total", str(20 * MiB))
        names = ["sink-%d" % i for i in range(4)]
        sinks = [self.sink(n) for n in names]
        sender = self.peer(register="sender")
        busy = self.flood(sender, names, 400)            # 100 MiB offered, 25 a sink
        self.assertGreater(busy, 0, "no send was refused")
        # a broadcast copy to a full peer is dropped and counted; a peer
        # with nothing queued still gets its copy
        observer = self.peer(register="observer")
        sender.send(bp.msg("event", "sender", "broadcast", "news", payload={"b": PAYLOAD}))
        _, body = observer.recv(2 * bp.SLOW)
        self.assertEqual(body.get("action"), "news")
        stats = sender.call_broker("stats", timeout=5 * bp.SLOW)
        self.assertGreaterEqual(stats["payload"]["dropped"]["broadcast_undelivered"], 4,
                                bp.dump(stats))
        growth = proc_status(self.pid, "VmHWM") - self.base
        got = sum(self.taken(s) for s in sinks)
        sys.stderr.write("[measured: %d of 400 taken, peak growth %.1f MiB] "
                         % (got, growth / MiB))
        # 20 MiB queued at most, plus one message each may always take, plus
        # what each sink's buffers took; without the total, 4 x 8 MiB
        self.assertLess(got * EVENT_BYTES, (20 + 4 * 2) * MiB)
        self.assertGreater(got * EVENT_BYTES, 16 * MiB)


if __name__ == "__main__":
    bp.main()
