#!/usr/bin/python3
"""Keyed hash tables (hardening issue, item 12).

uthash's default hash (HASH_JEN, Jenkins) has no key: an attacker can
search for msg_ids whose hashes agree in their low bits. Those all land
in one bucket of the in-flight table, uthash gives up expanding it, and
every duplicate check walks the whole chain: the broker's work per
request grows with the number in flight. With the keyed hash (SipHash,
random key per process) the same ids cost what random ids cost.

The test sends 40,000 requests to sinks that never answer, once with
random msg_ids and once with msg_ids crafted to collide under HASH_JEN
(found by a small C helper built here, with uthash.h's own HASH_JEN), and
compares the broker's CPU time for the two in the same run: a ratio, so
that a slow machine moves both. 8 connections and 8 sink instances keep
every peer under its share of the table (10,000 of 100,000 by default).
"""
import os
import subprocess
import sys
import tempfile
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "integration"))
import brokerproc as bp  # noqa: E402
import zmq  # noqa: E402

N = 40000
PEERS = 8
LOW_BITS = 10           # agree on these: one bucket of any table up to 1024 buckets
                        # (uthash stops expanding such a table at 128)

COLLIDER = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uthash.h>
/* argv[1] ids whose HASH_JEN agrees with 0 in the low argv[2] bits */
int main(int argc, char **argv)
{
    long want = atol(argv[1]);
    unsigned mask = (1u << atoi(argv[2])) - 1;
    char id[32];
    for (unsigned long long n = 0; want > 0; n++) {
        int len = snprintf(id, sizeof id, "jen-%llx", n);
        unsigned h;
        HASH_JEN(id, (unsigned)len, h);
        if ((h & mask) == 0) {
            puts(id);
            want--;
        }
    }
    return 0;
}
"""


def colliding_ids(count):
    with tempfile.TemporaryDirectory(prefix="smartshop-collide-") as d:
        src, exe = os.path.join(d, "collide.c"), os.path.join(d, "collide")
        with open(src, "w") as f:
            f.write(COLLIDER)
        subprocess.run(["cc", "-O2", "-o", exe, src], check=True)
        out = subprocess.run([exe, str(count), str(LOW_BITS)], check=True,
                             stdout=subprocess.PIPE, text=True).stdout
    ids = out.split()
    assert len(ids) == count and len(set(ids)) == count
    return ids


def drain(sock):
    n = 0
    while True:
        try:
            sock.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            return n
        n += 1


class KeyedHashTest(bp.BrokerTestCase):

    def run_phase(self, name, ids, patience):
        """Sends a request per id to sinks of `name`; returns the broker's
        CPU seconds and the wall time until the sinks have them all (the
        test fails if that is longer than `patience` seconds)."""
        sinks = [self.peer(identity="%s-sink-%d" % (name, i)) for i in range(PEERS)]
        for s in sinks:
            s.register(name)
        callers = [self.peer(name="%s-caller-%d" % (name, i)) for i in range(PEERS)]
        probe = self.peer(name="%s-probe" % name)
        pings = []                  # another peer's round trips meanwhile
        pid = self.broker.proc.pid
        received = 0
        cpu0, t0 = bp.cpu_seconds(pid), time.monotonic()
        for start in range(0, len(ids), 200 * PEERS):
            chunk = ids[start:start + 200 * PEERS]
            for k, msg_id in enumerate(chunk):
                m = bp.msg("request", callers[k % PEERS].name, name, "hold", ttl_ms=300000)
                m["msg_id"] = msg_id
                callers[k % PEERS].send(m)
            for s in sinks:
                received += drain(s.sock)
            ping_start = time.monotonic()
            probe.call_broker("ping", timeout=patience)
            pings.append(time.monotonic() - ping_start)
        deadline = t0 + patience
        while received < len(ids) and time.monotonic() < deadline:
            got = sum(drain(s.sock) for s in sinks)
            received += got
            if not got:
                time.sleep(0.005)
        cpu, wall = bp.cpu_seconds(pid) - cpu0, time.monotonic() - t0
        self.assertEqual(received, len(ids), "%s: the sinks got %d of %d requests in %.1f s"
                         % (name, received, len(ids), patience))
        refused = [c for c in callers if c.recv_raw(0)]
        self.assertEqual(refused, [], "%s: a caller was answered (refused?)" % name)
        # empty the table for the next phase: the sinks go, their requests fail
        for s in sinks:
            s.close()
        self.assertTrue(bp.wait_until(
            lambda: probe.call_broker("stats", timeout=10 * bp.SLOW)["payload"]["inflight"] == 0,
            30 * bp.SLOW), "%s: requests still in flight" % name)
        for c in callers:
            c.close()
        pings.sort()
        return cpu, wall, pings[len(pings) // 2], pings[-1]

    def test_ids_chosen_to_collide_cost_what_random_ids_cost(self):
        t = time.monotonic()
        crafted = colliding_ids(N)
        print("crafted %d ids in %.1f s" % (N, time.monotonic() - t), file=sys.stderr)
        random_ids = [str(uuid.uuid4()) for _ in range(N)]
        cpu_random, wall_random, _, _ = self.run_phase("sh-random", random_ids, 120 * bp.SLOW)
        # the unkeyed table needs minutes here: do not wait for it
        cpu_crafted, wall_crafted, ping_median, ping_max = self.run_phase(
            "sh-crafted", crafted, 10 * wall_random + 10 * bp.SLOW)
        ratio = cpu_crafted / max(cpu_random, 0.05)
        report = ("broker CPU %.2f s for %d random ids, %.2f s for %d crafted (x%.2f); "
                  "wall %.2f s and %.2f s; a ping meanwhile: median %.1f ms, max %.1f ms"
                  % (cpu_random, N, cpu_crafted, N, ratio, wall_random, wall_crafted,
                     ping_median * 1000, ping_max * 1000))
        print(report, file=sys.stderr)
        self.assertLess(ratio, 2.0, report)
        self.assertLess(wall_crafted, 3.0 * max(wall_random, 0.5), report)
        self.assertLess(ping_median, 0.1 * bp.SLOW, report)


if __name__ == "__main__":
    import unittest
    unittest.main(verbosity=2)
