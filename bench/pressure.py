#!/usr/bin/env python3
"""Cgroup pressure benchmark: a cache of regenerable values beside a co-tenant,
dropalloc against LRU caches on jemalloc, mimalloc and glibc.

    bazel run -c opt //bench:pressure                       # full: 256 MiB, 20 s per contender
    bazel run -c opt //bench:pressure -- --limit-mib=256 --seconds=30
    bazel run -c opt //bench:pressure -- --quick            # 64 MiB, 4 contenders, < 20 s

Every scenario runs in a fresh child memory cgroup made under this process's
own (cgroup v1 memory.limit_in_bytes / memory.oom_control, or v2 memory.max /
memory.events), removed afterwards, even on error. Where none can be made the
driver says exactly why and exits with status 3: it never runs without the
limit.

A scenario is two processes put into the cgroup before they allocate
anything (each waits for a byte on stdin):
  - the cache: Zipf-distributed keys over values of 1-64 KiB totalling 4x the
    limit, rebuilt by deterministic CPU work (--build-ns-per-kib), each served
    value checked against the checksum of its first build;
  - the co-tenant: ordinary memory, ramping to --cotenant-share of the limit
    from 30% of the run over 15% of it, held until 60%, then freed; it exits.
The driver samples the cgroup's usage and OOM-kill counter every 100 ms and
tells from each process's exit status which one the OOM killer took.

Contenders:
  dropalloc-sealed    dropalloc::cache, sealed droppable values, no budget
  dropalloc-unsealed  the same values in droppable blocks never sealed; a hit
                      is verified with the checksum only, so a mismatch is a
                      detected drop (miss + rebuild), never wrong data
  dropalloc-budget    dropalloc::cache with byte_budget = limit minus the
                      rest of the process, fixed at start
  <malloc>-lru-<N>%   std::unordered_map + std::list LRU, values in
                      std::vector<char>, budget N% of the limit, with
                      glibc, or by LD_PRELOAD jemalloc, mimalloc, tcmalloc
                      (where installed) and each --contender NAME=PATH (a run
                      whose malloc is not the contender's is rejected)
"Wrong" counts values a cache served as valid whose checksum differs.

Writes pressure-<mode>.{md,json}, -hitrate.svg and -memory.svg (gnuplot) to
--out DIR (default $TMPDIR/dropalloc-bench), or with --save to bench/results/
of the source tree. Quick mode judges no targets: one short run checks only
that the benchmark works. Python standard library only.
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import report_common  # noqa: E402  (next to this file, also under bazel run)

MIB = 1 << 20


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# --- cgroups -------------------------------------------------------------------------

class NoCgroup(Exception):
    pass


def own_memory_cgroup():
    """(version, dir) of this process's memory cgroup, or raises NoCgroup."""
    try:
        cgroups = open("/proc/self/cgroup").read()
        mounts = open("/proc/self/mountinfo").read()
    except OSError as e:
        raise NoCgroup("cannot read /proc/self/cgroup or mountinfo: %s" % e)
    v1 = v2 = None
    for line in mounts.splitlines():
        left, _, right = line.partition(" - ")
        f, r = left.split(), right.split()
        if len(f) < 5 or len(r) < 3:
            continue
        if r[0] == "cgroup" and "memory" in r[2].split(","):
            v1 = (f[3], f[4])
        elif r[0] == "cgroup2":
            v2 = (f[3], f[4])

    def under(m, path):
        root, mdir = m
        if root != "/" and path.startswith(root):
            path = path[len(root):]
        return mdir + ("" if path == "/" else path)

    v2_path = None
    for line in cgroups.splitlines():
        parts = line.split(":", 2)
        if len(parts) < 3:
            continue
        if parts[0] == "0" and parts[1] == "":
            v2_path = parts[2]
        if "memory" in parts[1].split(",") and v1:
            return 1, under(v1, parts[2])
    if v2_path is not None and v2:
        d = under(v2, v2_path)
        try:
            if "memory" in open(d + "/cgroup.controllers").read().split():
                return 2, d
        except OSError:
            pass
        raise NoCgroup("cgroup v2 at %s has no memory controller" % d)
    raise NoCgroup("no memory cgroup controller is mounted")


class Cgroup:
    """A child memory cgroup with a limit; remove() kills what is left in it."""

    def __init__(self, name, limit):
        self.version, parent = own_memory_cgroup()
        if self.version == 2:
            try:
                if "memory" not in open(parent + "/cgroup.subtree_control").read().split():
                    self._write(parent + "/cgroup.subtree_control", "+memory")
            except OSError as e:
                raise NoCgroup("cannot enable the memory controller for children of %s: %s" % (parent, e))
        self.dir = os.path.join(parent, name)
        try:
            os.mkdir(self.dir)
        except FileExistsError:
            pass
        except OSError as e:
            raise NoCgroup("cannot make %s: %s" % (self.dir, e.strerror))
        try:
            self._write(self.dir + ("/memory.limit_in_bytes" if self.version == 1 else "/memory.max"), str(limit))
        except OSError as e:
            self.remove()
            raise NoCgroup("cannot set the limit of %s: %s" % (self.dir, e.strerror))

    @staticmethod
    def _write(path, value):
        with open(path, "w") as f:
            f.write(value)

    def add(self, pid):
        self._write(self.dir + "/cgroup.procs", str(pid))

    def usage(self):
        name = "/memory.usage_in_bytes" if self.version == 1 else "/memory.current"
        try:
            return int(open(self.dir + name).read())
        except (OSError, ValueError):
            return 0

    def oom_kills(self):
        name = "/memory.oom_control" if self.version == 1 else "/memory.events"
        try:
            for line in open(self.dir + name):
                k, _, v = line.partition(" ")
                if k == "oom_kill":
                    return int(v)
        except (OSError, ValueError):
            pass
        return 0

    def procs(self):
        try:
            return [int(p) for p in open(self.dir + "/cgroup.procs").read().split()]
        except OSError:
            return []

    def remove(self):
        # Only our own children can be in it (it was made for them); kill
        # stragglers, then retry rmdir while exiting processes leave.
        for _ in range(300):
            for pid in self.procs():
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            try:
                os.rmdir(self.dir)
                return True
            except FileNotFoundError:
                return True
            except OSError:
                time.sleep(0.01)
        log("pressure: could not remove %s" % self.dir)
        return False


# --- processes -----------------------------------------------------------------------

def parse_kv(line):
    out = {}
    for tok in line.split()[1:]:
        k, _, v = tok.partition("=")
        out[k] = v
    return out


class Worker:
    """A child that prints READY, waits for a byte on stdin, then reports lines."""

    def __init__(self, argv, env=None):
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=env, text=True, bufsize=1)
        self.lines = []       # (kind, dict)
        self.ready = None
        self.stderr = ""
        line = self.proc.stdout.readline()
        if line.startswith("READY"):
            self.ready = parse_kv(line)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.err_reader = threading.Thread(target=self._read_err, daemon=True)
        self.err_reader.start()

    def _read(self):
        for line in self.proc.stdout:
            kind = line.split(" ", 1)[0]
            self.lines.append((kind, parse_kv(line)))

    def _read_err(self):
        self.stderr = self.proc.stderr.read()

    def go(self):
        self.proc.stdin.write("g")
        self.proc.stdin.flush()

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.reader.join(2)
        self.err_reader.join(2)

    def died_by(self):
        rc = self.proc.returncode
        if rc is None:
            return None
        return "SIGKILL" if rc == -signal.SIGKILL else ("signal %d" % -rc if rc < 0 else ("exit %d" % rc if rc else None))


# --- one scenario --------------------------------------------------------------------

class Contender:
    def __init__(self, name, kind, malloc=None, share=None, preload=None, unavailable=None):
        self.name, self.kind, self.malloc, self.share = name, kind, malloc, share
        self.preload = preload          # LD_PRELOAD of an LRU contender, None for glibc
        self.unavailable = unavailable  # why its library cannot be preloaded


def contenders(budgets, preloads):
    """preloads: [(malloc name, path, why unavailable)] from report_common.preload_contenders."""
    cs = [Contender("dropalloc-sealed", "sealed"), Contender("dropalloc-unsealed", "unsealed"),
          Contender("dropalloc-budget", "budget")]
    for share in budgets:
        for m, path, why in [("glibc", None, None)] + list(preloads):
            cs.append(Contender("%s-lru-%d%%" % (m, share), "lru", m, share, path, why))
    return cs


def run_scenario(args, c, index, bindir, rounds, timeline):
    limit = args.limit_mib * MIB
    start, ramp, hold = timeline
    res = {"name": c.name}
    env = dict(os.environ)
    if c.kind == "lru":
        argv = [os.path.join(bindir, "pressure_lru"), "--budget=%d" % (limit * c.share // 100)]
        if c.unavailable:
            res["rejected"] = c.unavailable
            return res
        if c.preload:
            env["LD_PRELOAD"] = c.preload
    else:
        argv = [os.path.join(bindir, "pressure_dropalloc"), "--kind=" + c.kind]
    argv += ["--limit=%d" % limit, "--seconds=%g" % args.seconds, "--rounds=%d" % rounds,
             "--zipf=%g" % args.zipf, "--seed=%d" % args.seed]
    cg = Cgroup("dropalloc-pressure-%d-%d" % (os.getpid(), index), limit)
    workers = []
    try:
        cache = Worker(argv, env)
        workers.append(cache)
        cot = Worker([os.path.join(bindir, "pressure_cotenant"), "--mib=%d" % int(limit * args.cotenant_share / MIB),
                      "--start=%g" % start, "--ramp=%g" % ramp, "--hold=%g" % hold])
        workers.append(cot)
        if cache.ready is None or cot.ready is None:
            for w in workers:
                w.kill()
            res["rejected"] = "a worker did not start: %s" % (cache.stderr or cot.stderr).strip()[-300:]
            return res
        res["ready"] = cache.ready
        # A library workload.h has no name for is recognised by its path.
        if c.kind == "lru" and cache.ready.get("alloc") != c.malloc and not (
                c.preload and report_common.same_library(cache.ready.get("malloc_from", ""), c.preload)):
            res["rejected"] = "malloc is %s (from %s), not %s: the preload did not take" % (
                cache.ready.get("alloc"), cache.ready.get("malloc_from"), c.malloc)
            return res
        for w in workers:
            cg.add(w.proc.pid)
        oom0 = cg.oom_kills()
        t0 = time.monotonic()
        for w in workers:
            w.go()
        cgs = []  # (t, usage bytes, oom kills)
        deadline = t0 + args.seconds + 10
        next_progress = t0 + 2
        while time.monotonic() < deadline:
            now = time.monotonic()
            cgs.append((now - t0, cg.usage(), cg.oom_kills() - oom0))
            if all(w.proc.poll() is not None for w in workers):
                break
            if now >= next_progress:
                next_progress += 2
                ss = [d for k, d in cache.lines if k == "S"][-10:]
                ops = sum(int(d["ops"]) for d in ss)
                hits = sum(int(d["hits"]) for d in ss)
                log("pressure:   %-20s t=%4.1fs  hit %5.1f%%  usage %4d MiB  cached %4d MiB  oom %d" % (
                    c.name, now - t0, 100.0 * hits / ops if ops else 0, cgs[-1][1] // MIB,
                    int(ss[-1]["cached"]) // MIB if ss else 0, cgs[-1][2]))
            time.sleep(0.1)
    finally:
        for w in workers:
            w.kill()
        removed = cg.remove()
    res["cgroup_removed"] = removed
    res["cgroup_version"] = cg.version
    res["oom_kills"] = max([x[2] for x in cgs] + [0])
    res["cache_died"] = cache.died_by()
    res["cotenant_died"] = cot.died_by()
    res["t0"] = t0
    res["cgroup"] = cgs
    res["samples"] = [dict(d, t=float(d["t"]) - t0) for k, d in cache.lines if k == "S"]
    ends = [d for k, d in cache.lines if k == "END"]
    res["end"] = ends[-1] if ends else None
    res["cotenant"] = [(float(d["t"]) - t0, int(d["mib"])) for k, d in cot.lines if k == "CT"]
    left = [float(d["t"]) - t0 for k, d in cot.lines if k == "LEFT"]
    res["cotenant_left"] = left[0] if left else None
    res["stderr"] = cache.stderr.strip()[-500:]
    return res


# --- analysis ------------------------------------------------------------------------

def summarize(r, timeline, seconds):
    start, ramp, hold = timeline
    ss = r["samples"]
    out = {}
    ops = sum(int(s["ops"]) for s in ss)
    hits = sum(int(s["hits"]) for s in ss)
    last_t = ss[-1]["t"] if ss else 0
    out["ops_per_s"] = ops / last_t if last_t > 0 else 0
    out["hit_rate"] = hits / ops if ops else 0
    out["served_s"] = last_t

    def phase(lo, hi):
        sel = [s for s in ss if lo <= s["t"] < hi]
        o = sum(int(s["ops"]) for s in sel)
        return (sum(int(s["hits"]) for s in sel) / o if o else None), sel

    left = r["cotenant_left"] if r["cotenant_left"] is not None else start + ramp + hold
    out["hit_before"], before = phase(start * 0.5, start)
    out["hit_during"], during = phase(start + ramp, left)
    out["hit_after"], _ = phase(left + 1.0, seconds + 1)
    out["wrong"] = sum(int(s["wrong"]) for s in ss)
    out["drops"] = int(ss[-1]["drops"]) if ss else 0
    if r["end"]:
        out["p50_us"] = int(r["end"]["p50_ns"]) / 1000
        out["p99_us"] = int(r["end"]["p99_ns"]) / 1000
        out["latency_exact"] = True
    else:  # killed before its END line: window medians, an approximation
        p50 = sorted(int(s["p50_ns"]) for s in ss)
        p99 = sorted(int(s["p99_ns"]) for s in ss)
        out["p50_us"] = p50[len(p50) // 2] / 1000 if p50 else None
        out["p99_us"] = p99[len(p99) * 99 // 100] / 1000 if p99 else None
        out["latency_exact"] = False
    out["peak_usage_mib"] = max([u for _, u, _ in r["cgroup"]] + [0]) / MIB
    out["cached_before_mib"] = (sum(int(s["cached"]) for s in before) / len(before) / MIB) if before else 0
    out["cached_during_mib"] = (sum(int(s["cached"]) for s in during) / len(during) / MIB) if during else 0
    out["cached_end_mib"] = int(ss[-1]["cached"]) / MIB if ss else 0
    # Regrowth: from the co-tenant's exit to the first sample holding 90% of
    # what was cached before it came.
    out["regrow_s"] = None
    if r["cotenant_left"] is not None and out["cached_before_mib"] > 0:
        goal = 0.9 * out["cached_before_mib"] * MIB
        for s in ss:
            if s["t"] >= left and int(s["cached"]) >= goal:
                out["regrow_s"] = s["t"] - left
                break
    out["cotenant_peak_mib"] = max([m for _, m in r["cotenant"]] + [0])
    return out


def fmt(v, spec="%.1f", none="–"):
    return none if v is None else spec % v


def report(args, cs, results, m, command, timeline, rounds, cost_note):
    start, ramp, hold = timeline
    L = []
    L.append("# Cgroup pressure benchmark (%s)\n" % (args.name or ("quick" if args.quick else "full")))
    L.append("Command: `%s`\n" % command)
    tc = m.get("libtcmalloc-minimal4", "?")
    L.append("Machine: %s CPUs, %s, %s; kernel %s; glibc %s, jemalloc %s, mimalloc %s%s (Debian, default "
             "options). Date %s. Shared machine: load average %s at the end.\n" % (
                 m["nproc"], m["cpu"], m["mem"], m["kernel"], m["libc6"], m["libjemalloc2"],
                 m["libmimalloc2.0"], ", tcmalloc %s" % tc if tc != "?" else "", m["date"], m["load"]))
    any_r = next((r for r in results.values() if "ready" in r), None)
    keys = any_r["ready"].get("keys") if any_r else "?"
    kb = int(any_r["ready"].get("key_bytes", 0)) / MIB if any_r else 0
    L.append("Setup: a fresh child memory cgroup (v%s) per contender, limit %d MiB; %s s of serving per "
             "contender, one process, one thread; %s keys, Zipf s=%g, values 1-64 KiB totalling %.0f MiB "
             "(%.1fx the limit), rebuilt by deterministic CPU work (%s). Co-tenant: ordinary memory, ramps to "
             "%d MiB (%.0f%% of the limit) from t=%.1f s over %.1f s, holds until t=%.1f s, frees and exits.\n" % (
                 any_r.get("cgroup_version", "?") if any_r else "?", args.limit_mib, args.seconds, keys,
                 args.zipf, kb, kb / args.limit_mib, cost_note, int(args.limit_mib * args.cotenant_share),
                 100 * args.cotenant_share, start, ramp, start + ramp + hold))
    L.append("| contender | ops/s | hit rate | before / during / after co-tenant | get p50 µs | get p99 µs "
             "| peak cgroup MiB | cached MiB before / during / end | regrow s | OOM kills | who was killed "
             "| drops detected | wrong |")
    L.append("|---|---:|---:|---|---:|---:|---:|---|---:|---:|---|---:|---:|")
    for c in cs:
        r = results.get(c.name)
        if r is None or "rejected" in r:
            L.append("| %s | %s |" % (c.name, "not run: " + (r["rejected"] if r else "not selected")) +
                     " |" * 11)
            continue
        s = r["summary"]
        killed = ", ".join(x for x in (
            ("cache (%s after %.1f s)" % (r["cache_died"], s["served_s"])) if r["cache_died"] else None,
            ("co-tenant (%s)" % r["cotenant_died"]) if r["cotenant_died"] else None) if x) or "none"
        L.append("| %s | %.0f | %.3f | %s / %s / %s | %s%s | %s%s | %.0f | %.0f / %.0f / %.0f | %s | %d | %s | %d | %d |" % (
            c.name, s["ops_per_s"], s["hit_rate"], fmt(s["hit_before"], "%.3f"), fmt(s["hit_during"], "%.3f"),
            fmt(s["hit_after"], "%.3f"), fmt(s["p50_us"]), "" if s["latency_exact"] else "*",
            fmt(s["p99_us"]), "" if s["latency_exact"] else "*", s["peak_usage_mib"],
            s["cached_before_mib"], s["cached_during_mib"], s["cached_end_mib"], fmt(s["regrow_s"], "%.1f", "no"),
            r["oom_kills"], killed, s["drops"], s["wrong"]))
    L.append("")
    L.append("Columns: hit rate over the whole run, then over %.1f-%.1f s (before the co-tenant), while it holds "
             "its memory, and from 1 s after it left to the end. Latency: one get (hit, or miss with rebuild), "
             "whole run (`*`: process killed, median of 100 ms window percentiles). A cache that was killed is measured only while it lived: its hit rate and ops/s cover the time before it died (given in the killed column), not the pressure it did not survive. Cached: bytes of values "
             "resident (dropalloc: resident pages of its droppable mappings, from `/proc/self/smaps`, which includes freed blocks not yet reclaimed; LRU: value bytes held, all resident). Regrow: seconds "
             "from the co-tenant's exit to the first 100 ms sample holding 90%% of the bytes cached before "
             "it came (`no`: never, or nothing to regrow). OOM kills: the cgroup's own counter (%s); who was "
             "killed: from the exit status. Drops detected: values found lost and rebuilt. Wrong: values "
             "served as valid whose checksum differs from the first build's. For dropalloc-unsealed a "
             "checksum mismatch is how a drop is detected (an unsealed block is never vouched for), so it "
             "counts as a drop and a miss, never as wrong.\n" % (
                 start * 0.5, start, "memory.oom_control oom_kill" if any_r and any_r.get("cgroup_version") == 1
                 else "memory.events oom_kill"))
    rej = [(c.name, results[c.name]["rejected"]) for c in cs if c.name in results and "rejected" in results[c.name]]
    for name, why in rej:
        L.append("- %s: **rejected: %s**" % (name, why))
    return "\n".join(L) + "\n"


def targets(cs, results):
    """Lines judging the benchmark's targets from the measured results."""
    L = []
    ok = {k: v for k, v in results.items() if "summary" in v}
    d = ok.get("dropalloc-sealed")
    if not d:
        return ["- dropalloc-sealed did not run: no targets judged."]
    s = d["summary"]
    L.append("- dropalloc-sealed: %d OOM kills (cache %s, co-tenant %s), %d wrong values: **%s**." % (
        d["oom_kills"], d["cache_died"] or "survived", d["cotenant_died"] or "survived", s["wrong"],
        "met" if d["oom_kills"] == 0 and s["wrong"] == 0 and not d["cache_died"] and not d["cotenant_died"]
        else "missed"))
    for name in ("dropalloc-budget", "dropalloc-unsealed"):
        if name in ok:
            o = ok[name]
            L.append("- %s: %d OOM kills, %d wrong values." % (name, o["oom_kills"], o["summary"]["wrong"]))
    base = [(k, v) for k, v in ok.items() if "-lru-" in k]
    survivors = [(k, v) for k, v in base if v["oom_kills"] == 0 and not v["cache_died"] and not v["cotenant_died"]]
    if survivors:
        bk, bv = max(survivors, key=lambda kv: kv[1]["summary"]["hit_rate"])
        ratio = s["hit_rate"] / bv["summary"]["hit_rate"] if bv["summary"]["hit_rate"] else float("inf")
        L.append("- hit rate %.3f vs the best fixed-budget baseline that survived without an OOM kill "
                 "(%s, %.3f): %.2fx (target ≥ 0.95x): **%s**." % (
                     s["hit_rate"], bk, bv["summary"]["hit_rate"], ratio, "met" if ratio >= 0.95 else "missed"))
    else:
        L.append("- no fixed-budget baseline ran without an OOM kill (its own or the co-tenant's), so the "
                 "0.95x comparison has no reference.")
    if base:
        bk, bv = max(base, key=lambda kv: kv[1]["summary"]["hit_rate"])
        L.append("- for reference, the best baseline regardless of kills: %s, hit rate %.3f (%d OOM kills): "
                 "dropalloc-sealed %.2fx." % (bk, bv["summary"]["hit_rate"], bv["oom_kills"],
                                               s["hit_rate"] / bv["summary"]["hit_rate"]
                                               if bv["summary"]["hit_rate"] else float("inf")))
    u = ok.get("dropalloc-unsealed")
    if u:
        uh = u["summary"]["hit_rate"]
        ratio = s["hit_rate"] / uh if uh else float("inf")
        L.append("- hit rate vs dropalloc-unsealed (%.3f): %.2fx (target ≥ 2x): **%s**." % (
            uh, ratio, "met" if ratio >= 2 else "missed"))
    rg = s["regrow_s"]
    L.append("- cached bytes back to 90%% of the pre-co-tenant level %s after the co-tenant left "
             "(target ≤ 1 s): **%s**." % ("never" if rg is None else "%.1f s" % rg,
                                          "met" if rg is not None and rg <= 1.0 else "missed"))
    return L


# --- plots ---------------------------------------------------------------------------

def plot(base, cs, results, args, timeline, m):
    gp = shutil.which("gnuplot")
    if not gp:
        return "gnuplot not installed"
    start, ramp, hold = timeline
    ran = [c for c in cs if c.name in results and "summary" in results[c.name]]
    if not ran:
        return "nothing ran"
    dat = base + ".dat.tmp"
    with open(dat, "w") as f:
        for c in ran:
            r = results[c.name]
            # Block 1: the cache's samples, hit rate smoothed over 5 windows (0.5 s).
            f.write("# %s samples\n" % c.name)
            ss = r["samples"]
            for i, s in enumerate(ss):
                w = ss[max(0, i - 4):i + 1]
                o = sum(int(x["ops"]) for x in w)
                h = sum(int(x["hits"]) for x in w)
                f.write("%.3f %.4f %.2f %.2f\n" % (s["t"], h / o if o else 0, int(s["cached"]) / MIB,
                                                  int(s["live"]) / MIB))
            f.write("\n\n# %s cgroup\n" % c.name)
            for t, u, _ in r["cgroup"]:
                f.write("%.3f %.2f\n" % (t, u / MIB))
            f.write("\n\n# %s cotenant\n" % c.name)
            pts = r["cotenant"] + ([(r["cotenant_left"], 0)] if r["cotenant_left"] is not None else [])
            for t, mib in pts:
                f.write("%.3f %d\n" % (t, mib))
            f.write("\n\n")
    left = start + ramp + hold
    shade = ("set object 1 rect from %g, graph 0 to %g, graph 1 behind fc rgb '#eeeeee' fs solid noborder\n"
             % (start, left))
    colors = ["#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d", "#666666",
              "#1f78b4", "#b2df8a", "#fb9a99", "#cab2d6"]
    where = report_common.machine_label(m)
    # noenhanced: contender names are printed as written ("_" and "%" are
    # not markup), here and in the memory plot.
    script = ["set terminal svg size 1100,620 dynamic noenhanced font 'sans,11' background '#ffffff'",
              "set output '%s-hitrate.svg.tmp'" % base,
              "set title %s" % report_common.gp_str(
                  "Hit rate (0.5 s windows), %d MiB cgroup; grey: co-tenant holds %d%% of the limit; one run "
                  "per contender\n%s" % (args.limit_mib, 100 * args.cotenant_share, where)),
              "set xlabel 'seconds'", "set ylabel 'hit rate'", "set yrange [0:1]",
              "set xrange [0:%g]" % (args.seconds + 0.5), "set key outside right",
              "set grid", shade.strip()]
    plots = []
    for i, c in enumerate(ran):
        dash = "dt 1" if c.kind != "lru" else ("dt 2" if c.malloc == "jemalloc" else
                                               "dt 3" if c.malloc == "mimalloc" else "dt 4")
        plots.append("'%s' index %d using 1:2 with lines lw %s %s lc rgb '%s' title '%s'" % (
            dat, 3 * i, "2.5" if c.kind != "lru" else "1.5", dash, colors[i % len(colors)], c.name))
    script.append("plot " + ", \\\n  ".join(plots))
    n = len(ran)
    cols = 3 if n > 4 else 2 if n > 1 else 1
    rows = (n + cols - 1) // cols
    script += ["unset object 1", "set terminal svg size %d,%d dynamic noenhanced font 'sans,10' "
               "background '#ffffff'" % (max(400 * cols, 800), 260 * rows + 60),
               "set output '%s-memory.svg.tmp'" % base,
               "set multiplot layout %d,%d title %s" % (rows, cols, report_common.gp_str(
                   "Memory, MiB (limit %d): cgroup usage, dropalloc/LRU values resident, co-tenant\n%s" % (
                       args.limit_mib, where))),
        "set key top left font ',8'", "set yrange [0:%d]" % int(args.limit_mib * 1.1), "unset ylabel",
        "set xlabel 'seconds'"]
    for i, c in enumerate(ran):
        script.append("set title '%s'" % c.name)
        script.append(shade.strip())
        script.append(("plot '%s' index %d using 1:2 with lines lw 2 lc rgb '#444444' title 'cgroup', "
                       "'' index %d using 1:3 with lines lw 2 lc rgb '#1b9e77' title 'cached', "
                       "'' index %d using 1:2 with steps lw 1.5 lc rgb '#d95f02' title 'co-tenant', "
                       "%d with lines dt 2 lc rgb '#999999' notitle") % (
                           dat, 3 * i + 1, 3 * i, 3 * i + 2, args.limit_mib))
        script.append("unset object 1")
    script.append("unset multiplot")
    r = subprocess.run([gp], input="\n".join(script) + "\n", text=True, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT)
    if not os.environ.get("PRESSURE_KEEP_DAT"):
        os.remove(dat)
    if r.returncode != 0:
        return "gnuplot failed: " + r.stdout.strip()[-300:]
    for suffix in ("-hitrate.svg", "-memory.svg"):
        os.replace(base + suffix + ".tmp", base + suffix)
    return None


# --- main ----------------------------------------------------------------------------

def machine():
    f = report_common.machine_facts(("libc6", "libjemalloc2", "libmimalloc2.0", "libtcmalloc-minimal4"))
    u = f["uname"]
    return {"nproc": f["nproc"], "cpu": f["cpu"], "mem": f["memory"], "kernel": "%s %s" % (u.release, u.machine),
            **f["versions"], "date": f["date"], "load": f["load"]}


def find_bindir(args):
    if args.bin_dir:
        return args.bin_dir
    for cand in ("bench", os.path.dirname(os.path.abspath(__file__))):
        if os.path.isfile(os.path.join(cand, "pressure_lru")):
            return cand
    sys.exit("pressure: cannot find the worker binaries; use `bazel run -c opt //bench:pressure` "
             "or --bin-dir=bazel-bin/bench")


def contender_from_name(name):
    """The contender a name in an earlier run's JSON stands for; only its name,
    kind and malloc matter for a report, not whether its library is here."""
    if "-lru-" in name:
        m, _, share = name.rpartition("-lru-")
        return Contender(name, "lru", m, int(share.rstrip("%")))
    for c in contenders([], []):
        if c.name == name:
            return c
    raise SystemExit("pressure: unknown contender %s in the JSON" % name)


def write_outputs(args, mode, out_dir, cs, results, m, command, timeline, rounds, cost_note):
    text = report(args, cs, results, m, command, timeline, rounds, cost_note)
    if args.quick:
        # One short run per contender: hit rates and regrowth times from it
        # are noise, so nothing is called met or missed.
        judged = ["Not judged: quick runs only check that the benchmark works (small limit, a few seconds, "
                  "one run per contender). Judge the targets from a full run."]
    else:
        judged = targets(cs, results)
    text += "\n## Against the targets\n\n" + "\n".join(judged) + "\n"
    base = os.path.join(out_dir, "pressure-" + mode)
    err = plot(base, cs, results, args, timeline, m)
    text += "\n" + ("Plots: not drawn (%s).\n" % err if err else
                    "Plots: [hit rate](pressure-%s-hitrate.svg), [memory](pressure-%s-memory.svg).\n" % (mode, mode))
    report_common.write_atomically(base + ".md", text)
    raw = {"machine": m, "command": command, "quick": args.quick, "limit_mib": args.limit_mib, "seconds": args.seconds,
           "rounds": rounds, "cost_note": cost_note, "zipf": args.zipf, "cotenant_share": args.cotenant_share,
           "timeline": timeline, "results": results}
    report_common.write_atomically(base + ".json", json.dumps(raw, indent=1))
    print(text)
    log("pressure: wrote %s.md, %s.json%s" % (base, base, "" if err else ", %s-hitrate.svg, %s-memory.svg" % (
        base, base)))
    log("pressure: results are in %s%s" % (out_dir, "" if getattr(args, "save", False) or args.rerender
                                           else " (--save writes bench/results/)"))


def rerender(args):
    raw = json.load(open(args.rerender))
    args.limit_mib, args.seconds = raw["limit_mib"], raw["seconds"]
    args.zipf = raw.get("zipf", args.zipf)
    args.cotenant_share = raw.get("cotenant_share", args.cotenant_share)
    timeline = tuple(raw["timeline"])
    results = raw["results"]
    for r in results.values():
        if "summary" in r:
            r["summary"] = summarize(r, timeline, args.seconds)
    cs = [contender_from_name(n) for n in results]
    base = os.path.basename(args.rerender)
    # Files written before "quick" was recorded say it in their name.
    args.quick = raw.get("quick", base == "pressure-quick.json")
    mode = args.name or base[len("pressure-"):-len(".json")]
    cost_note = raw.get("cost_note") or (
        "~%d ns per KiB: %d mixing rounds per 8-byte word, calibrated once for all contenders" % (
            args.build_ns_per_kib, raw["rounds"]))
    # Beside the JSON unless told otherwise: redrawing a committed run updates it.
    out_dir = report_common.output_dir(args) if (args.out or args.save) else \
        os.path.dirname(os.path.abspath(args.rerender))
    write_outputs(args, mode, out_dir, cs, results, raw["machine"], raw["command"], timeline, raw["rounds"],
                  cost_note)
    return 0


def on_sigterm(_signum, _frame):
    raise KeyboardInterrupt()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="64 MiB, 4 s per contender, 4 contenders (CI)")
    ap.add_argument("--limit-mib", type=int, help="cgroup limit (default 256; quick 64)")
    ap.add_argument("--seconds", type=float, help="serving time per contender (default 20; quick 3.5)")
    ap.add_argument("--budgets", default="50,80,100", help="LRU budgets, %% of the limit")
    ap.add_argument("--only", help="comma-separated contender names to run (default: all; quick: 4)")
    ap.add_argument("--build-ns-per-kib", type=int, default=1000, help="value rebuild cost (default 1000)")
    ap.add_argument("--zipf", type=float, default=0.99, help="Zipf exponent of the key popularity")
    ap.add_argument("--cotenant-share", type=float, default=0.6, help="co-tenant peak, share of the limit")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--bin-dir", help="directory holding pressure_lru etc. (default: runfiles)")
    report_common.add_output_args(ap, "pressure")
    report_common.add_contender_arg(ap)
    ap.add_argument("--name", help="report name: pressure-<name>.* (default: quick or full)")
    ap.add_argument("--rerender", metavar="JSON", help="redraw the report and plots of an earlier run's JSON")
    ap.add_argument("--probe", action="store_true", help="only check that a child cgroup can be made")
    args = ap.parse_args()
    if args.limit_mib is None:
        args.limit_mib = 64 if args.quick else 256
    if args.seconds is None:
        args.seconds = 3.5 if args.quick else 20
    mode = args.name or ("quick" if args.quick else "full")

    if args.rerender:
        return rerender(args)
    # SIGTERM (a test timeout, a killed run) unwinds like Ctrl-C, so the
    # finally blocks kill the workers and remove the cgroup.
    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        probe = Cgroup("dropalloc-pressure-%d-probe" % os.getpid(), args.limit_mib * MIB)
        probe.remove()
    except NoCgroup as e:
        log("pressure: cannot run without a memory limit: %s" % e)
        return 3
    if args.probe:
        log("pressure: a child memory cgroup (v%d) can be made under %s" % (
            probe.version, os.path.dirname(probe.dir)))
        return 0

    bindir = find_bindir(args)
    ws = os.environ.get("BUILD_WORKSPACE_DIRECTORY")
    out_dir = report_common.output_dir(args)
    command = ("bazel run -c opt //bench:pressure" + (" --" if sys.argv[1:] else "") if ws
               else "python3 bench/pressure.py") + "".join(" " + a for a in sys.argv[1:])
    cs = contenders([int(x) for x in args.budgets.split(",") if x],
                    report_common.preload_contenders(args.contender, log, "pressure"))
    only = args.only.split(",") if args.only else (
        ["dropalloc-sealed", "dropalloc-unsealed", "dropalloc-budget", "glibc-lru-50%"] if args.quick else None)
    if only:
        unknown = [n for n in only if n not in [c.name for c in cs]]
        if unknown:
            sys.exit("pressure: unknown contender(s): %s" % ", ".join(unknown))
        cs = [c for c in cs if c.name in only]
    r = subprocess.run([os.path.join(bindir, "pressure_lru"), "--calibrate=%d" % args.build_ns_per_kib],
                       text=True, stdout=subprocess.PIPE)
    rounds = int(r.stdout.strip())
    cost_note = "~%d ns per KiB: %d mixing rounds per 8-byte word, calibrated once for all contenders" % (
        args.build_ns_per_kib, rounds)
    s = args.seconds
    timeline = (0.3 * s, 0.15 * s, 0.15 * s)  # co-tenant: start, ramp, hold
    m = machine()
    log("pressure: %s mode, limit %d MiB, %g s per contender, %d contenders; %s" % (
        mode, args.limit_mib, s, len(cs), cost_note))
    results = {}
    try:
        for i, c in enumerate(cs):
            log("pressure: [%d/%d] %s" % (i + 1, len(cs), c.name))
            res = run_scenario(args, c, i, bindir, rounds, timeline)
            if "rejected" not in res:
                if not res["samples"]:
                    res["rejected"] = "no samples (cache %s): %s" % (res["cache_died"], res["stderr"])
                else:
                    res["summary"] = summarize(res, timeline, s)
                    sm = res["summary"]
                    log("pressure:   -> hit %.3f, %.0f ops/s, OOM kills %d, cache %s, co-tenant %s, wrong %d, "
                        "drops %d" % (sm["hit_rate"], sm["ops_per_s"], res["oom_kills"],
                                      res["cache_died"] or "ok", res["cotenant_died"] or "ok", sm["wrong"],
                                      sm["drops"]))
            else:
                log("pressure:   -> rejected: %s" % res["rejected"])
            results[c.name] = res
    except NoCgroup as e:
        log("pressure: cannot run without a memory limit: %s" % e)
        return 3
    except KeyboardInterrupt:
        log("pressure: interrupted; workers killed, cgroups removed")
        return 130

    m["load"] = " ".join("%.1f" % x for x in os.getloadavg())
    write_outputs(args, mode, out_dir, cs, results, m, command, timeline, rounds, cost_note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
