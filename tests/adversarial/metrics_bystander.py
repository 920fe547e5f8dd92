"""A bystander for the metrics tests (tests/adversarial/test_metrics_*.py):
it pings the broker from its own connection and thread while an attack
runs, and says how long its slowest round trip took."""
import threading
import time

import brokerproc as bp

STALL_BOUND_S = 0.1 * bp.SLOW      # the longest a bystander may wait


class Bystander:
    """Pings the broker from its own connection and thread, and records
    every round trip's time."""

    def __init__(self, broker):
        self.peer = broker.peer()
        self.peer.call_broker("ping", src="m-bystander", timeout=10)
        self.rtts = []
        self.failures = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            t = time.monotonic()
            try:
                self.peer.call_broker("ping", src="m-bystander", timeout=30)
            except AssertionError as exc:
                self.failures.append(str(exc))
                return
            self.rtts.append(time.monotonic() - t)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(60)
        self.peer.close()

    def worst(self):
        return max(self.rtts) if self.rtts else float("inf")


def stalls_no_one(test, broker, attack, tries=3):
    """Runs attack() while a bystander pings; passes if on one of `tries`
    runs its slowest round trip stayed under STALL_BOUND_S (a loaded
    machine may stall a run on its own; a stalling broker stalls all)."""
    worst = []
    for _ in range(tries):
        with Bystander(broker) as by:
            time.sleep(0.05)
            attack()
            time.sleep(0.05)
        test.assertEqual(by.failures, [])
        worst.append(by.worst())
        if worst[-1] <= STALL_BOUND_S:
            return
    test.fail("a bystander waited %s s (bound %.2f s)"
              % (", ".join("%.3f" % w for w in worst), STALL_BOUND_S))
