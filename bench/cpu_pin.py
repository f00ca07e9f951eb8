"""The CPU that compare.py pins single-threaded runs to, and how it knows.

On a shared virtual machine one CPU can run slower than the other for minutes
at a time while the other stays steady: measured on this project's 2-CPU
machine, glibc_simple under one allocator took 0.20 s pinned to one CPU in
every run, and 0.21 s or 0.33 s pinned to the other, depending on the minute
(mimalloc alike: 0.09 s, and 0.09 s or 0.15 s). A single-threaded workload
left to the scheduler lands on either, so its times are bimodal and a median
of a few runs can compare two contenders measured on different CPUs. So every
contender's single-threaded runs go to one CPU: the one whose slowest probe
(bench/cpu_probe, a fixed amount of allocator-shaped work) was fastest.
Threaded workloads keep every CPU. The probes are repeated before each
repetition, so a report shows whether the chosen CPU stayed as fast."""
import os
import subprocess


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


def describe(probes_per_rep, cpu):
    """One sentence for a report: each CPU's probe times over the run."""
    parts = []
    for c in sorted({c for p in probes_per_rep for c in p}):
        ts = [t for p in probes_per_rep for t in p.get(c, [])]
        if ts:
            parts.append("CPU %d %.1f-%.1f ms%s" % (c, 1e3 * min(ts), 1e3 * max(ts),
                                                   " (pinned)" if c == cpu else ""))
    return ", ".join(parts)
