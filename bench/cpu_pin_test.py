"""cpu_pin's choices, with the probes replaced by scripted times."""
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cpu_pin  # noqa: E402


class Scripted:
    """probe_all stand-in: hands out the given {cpu: [seconds]} in order."""

    def __init__(self, rounds):
        self.rounds = list(rounds)
        self.calls = 0

    def __call__(self, bindir, cpus, n):
        self.calls += 1
        return self.rounds.pop(0)


class PinningTest(unittest.TestCase):
    def setUp(self):
        self.saved = (cpu_pin.probe_all, cpu_pin.allowed_cpus, cpu_pin.Pinning.RECHECK_S)
        cpu_pin.allowed_cpus = lambda: [0, 1]
        cpu_pin.Pinning.RECHECK_S = 0

    def tearDown(self):
        cpu_pin.probe_all, cpu_pin.allowed_cpus, cpu_pin.Pinning.RECHECK_S = self.saved

    def test_choose_takes_the_cpu_whose_slowest_probe_was_fastest(self):
        self.assertEqual(cpu_pin.choose({0: [0.020, 0.040], 1: [0.025, 0.026]}), 1)
        self.assertEqual(cpu_pin.choose({0: [0.021], 1: []}), 0)
        self.assertIsNone(cpu_pin.choose({0: [], 1: []}))

    def test_groups_follow_the_probes(self):
        cpu_pin.probe_all = Scripted([{0: [0.022, 0.023], 1: [0.037, 0.040]},
                                      {0: [0.036, 0.039], 1: [0.021, 0.022]}])
        p = cpu_pin.Pinning("auto", "bin")
        self.assertEqual(p.for_group("rep 1 a"), 0)
        self.assertEqual(p.for_group("rep 1 b"), 1)
        text = p.summary()
        self.assertIn("chosen by probe of 2 groups (CPU 0 for 1, CPU 1 for 1)", text)
        self.assertIn("21.0-23.0 ms on the CPU chosen, 36.0-40.0 ms on the other", text)

    def test_a_group_whose_probes_all_failed_is_reported_unpinned(self):
        cpu_pin.probe_all = Scripted([{0: [0.022, 0.023], 1: [0.030, 0.031]}, {0: [], 1: []},
                                      {0: [0.022], 1: [0.024]}])
        p = cpu_pin.Pinning("auto", "bin")
        self.assertEqual(p.for_group("rep 1 a"), 0)
        self.assertIsNone(p.for_group("rep 1 b"))
        self.assertEqual(p.for_group("rep 1 c"), 0)
        text = p.summary()
        self.assertIn("chosen by probe of 2 groups (CPU 0 for 2)", text)
        self.assertIn("; 1 group not pinned, no probe having run before it (rep 1 b)", text)

    def test_a_given_cpu_is_kept_and_none_probes_nothing(self):
        cpu_pin.probe_all = Scripted([{0: [0.050], 1: [0.020]}])
        self.assertEqual(cpu_pin.Pinning("0", "bin").for_group("g"), 0)
        cpu_pin.probe_all = Scripted([])
        none = cpu_pin.Pinning("none", "bin")
        self.assertIsNone(none.for_group("g"))
        self.assertIsNone(none.before_threaded_group("t"))
        self.assertEqual(cpu_pin.probe_all.calls, 0)
        with self.assertRaises(ValueError):
            cpu_pin.Pinning("7", "bin")
        with self.assertRaises(ValueError):
            cpu_pin.Pinning("fast", "bin")

    def test_threaded_group_waits_out_a_slow_spell(self):
        fast = {0: [0.021, 0.022], 1: [0.021, 0.022]}
        slow1 = {0: [0.021, 0.022], 1: [0.036, 0.040]}
        cpu_pin.probe_all = Scripted([fast, slow1, slow1, fast, slow1, slow1, slow1])
        p = cpu_pin.Pinning("auto", "bin", max_wait=10)
        cpu_pin.Pinning.RECHECK_S = 5   # counted, not slept: time.sleep is replaced below
        slept = []
        saved_sleep = cpu_pin.time.sleep
        cpu_pin.time.sleep = slept.append
        try:
            self.assertEqual(p.before_threaded_group("rep 1 t1"), [])        # fast at once
            self.assertEqual(p.before_threaded_group("rep 1 t2"), [])        # slow twice, then fast
            self.assertEqual(p.before_threaded_group("rep 1 t3"), [1])       # slow for 10 s: runs anyway
        finally:
            cpu_pin.time.sleep = saved_sleep
        self.assertEqual(slept, [5, 5, 5, 5])
        text = p.threaded_summary()
        self.assertIn("1 of 3 threaded groups started at once", text)
        self.assertIn("1 after waiting for a slow CPU (10 s in all)", text)
        self.assertIn("1 with a CPU still slow after up to 10 s (rep 1 t3: CPU 1)", text)


if __name__ == "__main__":
    unittest.main()
