"""What the pressure benchmark runs: its scenarios and its contenders, with
every option each contender's allocator runs under (bench/pressure.py)."""

import os

# The adaptive baselines' malloc options: hand freed memory back as soon as
# possible, so that a shrink relieves the cgroup. jemalloc purges from its own
# thread with no decay; mimalloc 2.0.9 has no purge delay, only the decommit
# delay (MIMALLOC_PURGE_DELAY is its name from 2.1 on, set too for newer ones).
ADAPTIVE_ENV = {
    "jemalloc": {"MALLOC_CONF": "background_thread:true,dirty_decay_ms:0,muzzy_decay_ms:0"},
    "mimalloc": {"MIMALLOC_DECOMMIT_DELAY": "0", "MIMALLOC_PURGE_DELAY": "0"},
}

# The dropalloc contender the README recommends: the sealed cache keeping
# headroom with the keeper's defaults (no cap; chosen by measurement: see the
# README's pressure section).
RECOMMENDED = "dropalloc-neighbour-uncapped"


class Contender:
    def __init__(self, name, kind, malloc=None, share=None, preload=None, unavailable=None, poll_ms=0):
        self.name, self.kind, self.malloc, self.share = name, kind, malloc, share
        self.preload = preload          # LD_PRELOAD of an LRU contender, None for glibc
        self.unavailable = unavailable  # why its library cannot be preloaded
        self.poll_ms = poll_ms          # adaptive budget poll period (0: none)

    @property
    def baseline(self):
        """A malloc cache (not dropalloc): what dropalloc is judged against."""
        return self.kind in ("lru", "adaptive-lru")

    def env(self):
        """Environment variables of its allocator (also recorded in the results)."""
        return dict(ADAPTIVE_ENV.get(self.malloc, {})) if self.kind == "adaptive-lru" else {}

    def argv(self, bindir, limit):
        if self.kind == "lru":
            return [os.path.join(bindir, "pressure_lru"), "--budget=%d" % (limit * self.share // 100)]
        if self.kind == "adaptive-lru":
            return [os.path.join(bindir, "pressure_lru"), "--adapt-ms=%d" % self.poll_ms]
        a = [os.path.join(bindir, "pressure_dropalloc"), "--kind=" + self.kind]
        return a + (["--adapt-ms=%d" % self.poll_ms] if self.poll_ms else [])


def contenders(polls, budgets, preloads, with_budget=True):
    """preloads: [(malloc name, path, why unavailable)] from report_common.preload_contenders."""
    cs = [Contender("dropalloc-neighbour", "neighbour"), Contender("dropalloc-neighbour-uncapped", "neighbour-uncapped"),
          Contender("dropalloc-sealed", "sealed")]
    # The policy over dropalloc values at the fastest poll only: it separates
    # policy from allocator; the slower polls are the baselines' question.
    cs += [Contender("dropalloc-adaptive-%dms" % p, "adaptive", "dropalloc", poll_ms=p) for p in polls[:1]]
    cs += [Contender("dropalloc-unsealed", "unsealed")]
    if with_budget:
        cs.append(Contender("dropalloc-budget", "budget"))
    mallocs = [("glibc", None, None)] + list(preloads)
    for p in polls:
        for m, path, why in mallocs:
            cs.append(Contender("%s-adaptive-%dms" % (m, p), "adaptive-lru", m, None, path, why, p))
    for share in budgets:
        for m, path, why in mallocs:
            cs.append(Contender("%s-lru-%d%%" % (m, share), "lru", m, share, path, why))
    return cs


def from_name(name):
    """The contender a name in an earlier run's JSON stands for (only what a
    report needs: name, kind, malloc)."""
    if "-lru-" in name:
        m, _, share = name.rpartition("-lru-")
        return Contender(name, "lru", m, int(share.rstrip("%")))
    if "-adaptive-" in name:
        m, _, p = name.rpartition("-adaptive-")
        return Contender(name, "adaptive" if m == "dropalloc" else "adaptive-lru", m, poll_ms=int(p.rstrip("ms")))
    for c in contenders([], [], []):
        if c.name == name:
            return c
    raise SystemExit("pressure: unknown contender %s in the JSON" % name)


class Scenario:
    """One row set. Times are for a run of `seconds`; the co-tenant takes
    `cotenant_share` of the limit."""

    def __init__(self, name, what, zipf=0.99, values=(1024, 65536), threads=1, caches=1, spike=False,
                 waves=1, every_poll=False, reference=False):
        self.name, self.what, self.zipf, self.values = name, what, zipf, values
        self.threads, self.caches, self.spike, self.waves = threads, caches, spike, waves
        self.every_poll = every_poll  # run the 50 and 200 ms polls too (else only the fastest)
        self.reference = reference    # run the reference lines (unsealed, budget) too

    def cotenant(self, seconds):
        """(start, ramp, hold, gap) of each co-tenant wave, in seconds."""
        start = 0.3 * seconds
        if self.waves > 1:
            return start, 0.2, 0.8, 1.0  # arrives every 2 s, present 1 s of each 2
        ramp = 0.1 if self.spike else 0.15 * seconds
        return start, ramp, 0.6 * seconds - start - ramp, 0.0

    def presence(self, seconds):
        """[(arrive, leave)] as planned (the co-tenant's own lines give the real times)."""
        start, ramp, hold, gap = self.cotenant(seconds)
        out, t = [], start
        for _ in range(self.waves):
            out.append((t, t + ramp + hold))
            t += ramp + hold + gap
        return out

    def worker_args(self):
        return ["--zipf=%g" % self.zipf, "--value-min=%d" % self.values[0], "--value-max=%d" % self.values[1],
                "--threads=%d" % self.threads]


def fmt_size(n):
    return "%d B" % n if n < 1024 else "%d KiB" % (n // 1024) if n < (1 << 20) else "%d MiB" % (n >> 20)


SCENARIOS = [
    Scenario("ramp", "co-tenant ramps to 60% of the limit over 15% of the run, holds, leaves",
             every_poll=True, reference=True),
    Scenario("spike", "co-tenant takes 60% of the limit within 100 ms", spike=True, every_poll=True,
             reference=True),
    Scenario("waves", "co-tenant comes (60% within 0.2 s, held 0.8 s) and goes, every 2 s, 3 times", waves=3),
    Scenario("two-caches", "two caches of the contender in one cgroup, and the ramp co-tenant", caches=2),
    Scenario("zipf-0.7", "ramp, keys Zipf s = 0.7", zipf=0.7),
    Scenario("zipf-1.2", "ramp, keys Zipf s = 1.2", zipf=1.2),
    Scenario("uniform", "ramp, keys uniform", zipf=0),
    Scenario("small-values", "ramp, values 100 B-4 KiB", values=(100, 4096)),
    Scenario("large-values", "ramp, values 16 KiB-1 MiB", values=(16384, 1 << 20)),
    Scenario("4-threads", "ramp, the cache served by 4 threads", threads=4),
]
QUICK = [RECOMMENDED, "dropalloc-sealed", "dropalloc-unsealed", "glibc-adaptive-10ms"]


def scenario_by_name(names):
    known = {s.name: s for s in SCENARIOS}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SystemExit("pressure: unknown scenario(s): %s (known: %s)" % (
            ", ".join(unknown), ", ".join(known)))
    return [known[n] for n in names]


def for_scenario(cs, sc, polls):
    """The contenders a scenario runs by default: every poll period only where
    it says so, the reference lines only where it says so."""
    fastest = min(polls) if polls else None
    out = []
    for c in cs:
        if c.poll_ms and not sc.every_poll and c.poll_ms != fastest:
            continue
        if c.kind in ("unsealed",) and not sc.reference:
            continue
        if c.kind == "budget":  # superseded by the adaptive and headroom policies: --only
            continue
        out.append(c)
    return out
