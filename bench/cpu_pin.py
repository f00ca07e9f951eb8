"""The CPU that compare.py pins single-threaded runs to, and how it knows.

On a shared virtual machine a CPU can run slower than the others for minutes
at a time: measured on this project's 2-CPU machine, glibc_simple under one
allocator took 0.20 s pinned to one CPU in every run for several minutes,
and 0.21 s or 0.33 s pinned to the other, depending on the minute (mimalloc
alike: 0.09 s, and 0.09 s or 0.15 s); later the roles were swapped. A
single-threaded workload left to the scheduler lands on either, so its times
are bimodal and a median of a few runs can compare two contenders measured
on different CPUs. So the single-threaded runs of every contender of one
workload in one repetition go to one CPU: the one whose slowest probe
(bench/cpu_probe, a fixed amount of allocator-shaped work), taken just
before, was fastest. Threaded workloads keep every CPU."""
import os
import subprocess
import time


def allowed_cpus():
    """The CPUs this process may run on, in order."""
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return list(range(os.cpu_count() or 1))


def pin_to(cpu):
    """A preexec_fn for subprocess.Popen that pins the child to cpu (None: no pin)."""
    if cpu is None:
        return None
    return lambda: os.sched_setaffinity(0, {cpu})


def probe(bindir, cpu):
    """Seconds one run of cpu_probe took on cpu, or None if it could not run."""
    try:
        r = subprocess.run([os.path.join(bindir, "cpu_probe")], stdout=subprocess.PIPE,
                           stderr=subprocess.DEVNULL, text=True, timeout=60, preexec_fn=pin_to(cpu))
    except (OSError, subprocess.TimeoutExpired):
        return None
    for word in r.stdout.split():
        if word.startswith("seconds="):
            return float(word.split("=", 1)[1])
    return None


def probe_all(bindir, cpus, rounds):
    """{cpu: [seconds, ...]}: `rounds` probes of each CPU, the CPUs alternated."""
    got = {cpu: [] for cpu in cpus}
    for _ in range(rounds):
        for cpu in cpus:
            s = probe(bindir, cpu)
            if s is not None:
                got[cpu].append(s)
    return got


def choose(probes):
    """The CPU whose slowest probe was fastest, or None if none was probed."""
    probed = [(max(ts), cpu) for cpu, ts in probes.items() if ts]
    return min(probed)[1] if probed else None


class Pinning:
    """Where the single-threaded runs go, group by group (a group: the runs of
    every contender of one workload in one repetition, so that they share a
    CPU). mode "auto": just before each group, ROUNDS probes of every CPU, and
    the group goes to the CPU whose slowest probe was fastest (either CPU of
    this project's machine has had its slow minutes); a CPU number: always
    that one, probed all the same for the report; "none": no pinning, no
    probes. Keeps every probe and choice for the report.

    Threaded groups cannot be pinned away from a slow CPU; before each, every
    CPU is probed, and while one is in a slow spell (a probe over SLOW times
    the fastest probe of the run so far) the group waits for it, up to
    max_wait seconds, then runs and is counted as run with a slow CPU."""

    ROUNDS = 2
    SLOW = 1.3
    RECHECK_S = 5

    def __init__(self, mode, bindir, max_wait=60):
        self.bindir = bindir
        self.cpus = allowed_cpus()
        self.mode = mode
        self.max_wait = max_wait
        self.fastest = None   # the fastest probe of the run so far
        self.groups = []      # (label, chosen cpu, {cpu: [seconds]})
        self.threaded = []    # (label, seconds waited, CPUs still slow, {cpu: [seconds]})
        if mode not in ("auto", "none"):
            try:
                self.mode = int(mode)
            except ValueError:
                raise ValueError("--cpu takes a CPU number, 'auto' or 'none', not %r" % mode)
            if self.mode not in self.cpus:
                raise ValueError("--cpu %d: this process may run on CPUs %s only" % (self.mode, self.cpus))

    @property
    def pins(self):
        return self.mode != "none"

    def for_group(self, label):
        """The CPU for the next group of runs (None: not pinned)."""
        if not self.pins:
            return None
        probes = self._probe()
        cpu = choose(probes) if self.mode == "auto" else self.mode
        self.groups.append((label, cpu, probes))
        return cpu

    def before_threaded_group(self, label):
        """Waits (up to max_wait) until no CPU is in a slow spell; records it."""
        if not self.pins:
            return
        waited = 0   # seconds slept, probes not counted
        while True:
            probes = self._probe()
            slow = sorted(c for c, ts in probes.items()
                          if ts and self.fastest is not None and max(ts) > self.SLOW * self.fastest)
            if not slow or waited >= self.max_wait:
                break
            time.sleep(self.RECHECK_S)
            waited += self.RECHECK_S
        self.threaded.append((label, waited, slow, probes))
        return slow

    def _probe(self):
        probes = probe_all(self.bindir, self.cpus, self.ROUNDS)
        seen = [t for ts in probes.values() for t in ts]
        if seen:
            self.fastest = min(seen + ([self.fastest] if self.fastest is not None else []))
        return probes

    def summary(self):
        """One sentence for a report: where the groups went, and the probes of
        the chosen CPUs against the others'."""
        if not self.pins:
            return "every run on every CPU (no pinning)"
        pinned = [g for g in self.groups if g[1] is not None]
        if not pinned:
            return "not pinned: bench/cpu_probe did not run"
        counts = {}
        for _, cpu, _ in pinned:
            counts[cpu] = counts.get(cpu, 0) + 1
        chosen = [t for _, cpu, pr in pinned for t in pr.get(cpu, [])]
        others = [t for _, cpu, pr in pinned for c, ts in pr.items() if c != cpu for t in ts]
        where = ", ".join("CPU %d for %d" % (c, n) for c, n in sorted(counts.items()))
        text = "%s of %d groups (%s); probes (`bench/cpu_probe`, %d per CPU before each group) %.1f-%.1f ms " \
               "on the CPU chosen" % (
                   "chosen by probe" if self.mode == "auto" else "CPU %d given" % self.mode, len(pinned), where,
                   self.ROUNDS, 1e3 * min(chosen), 1e3 * max(chosen))
        if others:
            text += ", %.1f-%.1f ms on the other%s" % (1e3 * min(others), 1e3 * max(others),
                                                      "s" if len(self.cpus) > 2 else "")
        # A group none of whose probes ran went wherever the scheduler put it.
        unpinned = [label for label, cpu, _ in self.groups if cpu is None]
        if unpinned:
            text += "; %d group%s not pinned, no probe having run before %s (%s)" % (
                len(unpinned), "s" if len(unpinned) > 1 else "", "them" if len(unpinned) > 1 else "it",
                ", ".join(unpinned))
        return text

    def threaded_summary(self):
        """One sentence for a report: how the threaded groups started."""
        if not self.pins or not self.threaded:
            return None
        at_once = [g for g in self.threaded if not g[2] and not g[1]]
        after_wait = [g for g in self.threaded if not g[2] and g[1]]
        still_slow = [g for g in self.threaded if g[2]]
        text = "%d of %d threaded groups started at once, every CPU's probe within %.1fx of the run's fastest" % (
            len(at_once), len(self.threaded), self.SLOW)
        if after_wait:
            text += "; %d after waiting for a slow CPU (%.0f s in all)" % (
                len(after_wait), sum(g[1] for g in after_wait))
        if still_slow:
            text += "; %d with a CPU still slow after up to %d s (%s)" % (
                len(still_slow), self.max_wait,
                ", ".join("%s: CPU %s" % (g[0], "/".join(map(str, g[2]))) for g in still_slow))
        return text

    def to_json(self):
        return {"pinned": [{"group": label, "cpu": cpu, "probes_s": {str(c): ts for c, ts in pr.items()}}
                           for label, cpu, pr in self.groups],
                "threaded": [{"group": label, "waited_s": w, "slow_cpus": slow,
                              "probes_s": {str(c): ts for c, ts in pr.items()}}
                             for label, w, slow, pr in self.threaded]}
