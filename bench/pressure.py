#!/usr/bin/env python3
"""Cgroup pressure benchmark: caches of regenerable values beside a co-tenant,
dropalloc against adaptive LRU caches on glibc, jemalloc and mimalloc, in a
set of scenarios.

    bazel run -c opt //bench:pressure                       # every scenario: 256 MiB, 10 s per run (~14 min)
    bazel run -c opt //bench:pressure -- --scenario=spike,waves
    bazel run -c opt //bench:pressure -- --quick            # ramp only, 64 MiB, 4 contenders (CI)

Every run gets a fresh child memory cgroup made under this process's own
(cgroup v1 memory.limit_in_bytes / memory.oom_control, or v2 memory.max /
memory.events) by bench/cgroupctl (//allocator:cgroup, the same code the
allocator and its tests use), and removed afterwards, even on error. Where
none can be made the
driver says exactly why and exits with status 3: it never runs without the
limit.

A run is one contender in one scenario: its cache process (two in the
two-caches scenario) and the co-tenant, put into the cgroup before they
allocate anything (each waits for a byte on stdin).
  - the cache: keys drawn Zipf(s) (or uniformly) over values totalling 4x the
    limit, rebuilt by deterministic CPU work (--build-ns-per-kib), each served
    value checked against the checksum of its first build;
  - the co-tenant: ordinary memory, 60% of the limit, arriving as the
    scenario says; it times every 1 MiB step it obtains and runs a touch loop
    (its stall), see pressure/cotenant.cc.
The driver samples the cgroup's usage and OOM-kill counter every 50 ms and
tells from each process's exit status which one the OOM killer took.
Caches report from a sampling thread, never from a serving thread.

Contenders (bench/pressure_contenders.py): dropalloc-sealed, dropalloc-neighbour
(sealed, keeping headroom), dropalloc-adaptive-<N>ms (the baselines' policy
over dropalloc values), dropalloc-unsealed (reference line), dropalloc-budget
(with --only), <malloc>-adaptive-<N>ms (LRU whose monitor polls the cgroup
every N ms, on glibc and, by LD_PRELOAD, jemalloc, mimalloc, tcmalloc where
installed and each --contender NAME=PATH), <malloc>-lru-<N>% (fixed budgets,
with --budgets).

Writes pressure-<mode>.{md,json} and per scenario -<scenario>-hitrate.svg and
-memory.svg (gnuplot) to --out DIR (default $TMPDIR/dropalloc-bench), or with
--save to bench/results/ of the source tree. Quick mode judges no targets.
Python standard library only.
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import report_common  # noqa: E402  (next to this file, also under bazel run)
import pressure_contenders as pc  # noqa: E402
import pressure_report  # noqa: E402

MIB = 1 << 20


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# --- cgroups -------------------------------------------------------------------------

class NoCgroup(Exception):
    pass


def cgroupctl(*argv):
    """Runs bench/cgroupctl (//allocator:cgroup, the one implementation of
    memory cgroups here) and returns its `cgroup k=v ...` line as a dict, or
    raises NoCgroup with its reason."""
    tool = None
    for cand in ("bench", os.path.dirname(os.path.abspath(__file__))):
        if os.access(os.path.join(cand, "cgroupctl"), os.X_OK):
            tool = os.path.join(cand, "cgroupctl")
            break
    if tool is None:
        # Not a missing cgroup: a broken setup, which must not read as "skipped".
        log("pressure: cannot find bench/cgroupctl; use `bazel run -c opt //bench:pressure`")
        sys.exit(4)
    r = subprocess.run([tool] + [str(a) for a in argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       universal_newlines=True)
    if r.returncode != 0:
        raise NoCgroup(r.stderr.strip().replace("cgroupctl: ", "", 1) or "cgroupctl failed")
    return parse_kv(r.stdout.strip())


def own_memory_cgroup():
    """(version, dir) of this process's memory cgroup, or raises NoCgroup."""
    kv = cgroupctl("probe")
    return int(kv["version"]), kv["dir"]


class Cgroup:
    """A child memory cgroup with a limit; remove() kills what is left in it."""

    def __init__(self, name, limit):
        kv = cgroupctl("create", name, int(limit))
        self.version, self.dir = int(kv["version"]), kv["dir"]
        self.usage_file, self.events_file = kv["usage"], kv["events"]

    def add(self, pid):
        with open(self.dir + "/cgroup.procs", "w") as f:
            f.write(str(pid))

    def usage(self):
        try:
            return int(open(self.usage_file).read())
        except (OSError, ValueError):
            return 0

    def oom_kills(self):
        try:
            for line in open(self.events_file):
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
        try:
            cgroupctl("remove", self.dir)
            return True
        except NoCgroup as e:
            log("pressure: %s" % e)
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



# --- one run -------------------------------------------------------------------------

def run_one(args, sc, c, index, bindir, rounds):
    """One contender in one scenario; a dict of what was measured."""
    limit = args.limit_mib * MIB
    res = {"name": c.name, "scenario": sc.name, "env": c.env()}
    if c.unavailable:
        res["rejected"] = c.unavailable
        return res
    env = dict(os.environ, **c.env())
    if c.preload:
        env["LD_PRELOAD"] = c.preload
    argv = c.argv(bindir, limit) + ["--limit=%d" % limit, "--seconds=%g" % args.seconds, "--rounds=%d" % rounds,
                                    "--seed=%d" % args.seed, "--interval=0.1"] + sc.worker_args()
    if args.zipf is not None:
        argv.append("--zipf=%g" % args.zipf)  # the last one counts
    start, ramp, hold, gap = sc.cotenant(args.seconds)
    cg = Cgroup("dropalloc-pressure-%d-%d" % (os.getpid(), index), limit)
    caches, cot, cgs, t0 = [], None, [], time.monotonic()
    try:
        for i in range(sc.caches):
            caches.append(Worker(argv[:] + (["--seed=%d" % (args.seed + 1000 * i)] if i else []), env))
        cot = Worker([os.path.join(bindir, "pressure_cotenant"), "--mib=%d" % int(limit * args.cotenant_share / MIB),
                      "--start=%g" % start, "--ramp=%g" % ramp, "--hold=%g" % hold, "--gap=%g" % gap,
                      "--waves=%d" % sc.waves])
        workers = caches + [cot]
        if any(w.ready is None for w in workers):
            for w in workers:
                w.kill()
            res["rejected"] = "a worker did not start: %s" % " ".join(w.stderr for w in workers).strip()[-300:]
            return res
        res["ready"] = caches[0].ready
        # A library workload.h has no name for is recognised by its path.
        if c.baseline and caches[0].ready.get("alloc") != c.malloc and not (
                c.preload and report_common.same_library(caches[0].ready.get("malloc_from", ""), c.preload)):
            res["rejected"] = "malloc is %s (from %s), not %s: the preload did not take" % (
                caches[0].ready.get("alloc"), caches[0].ready.get("malloc_from"), c.malloc)
            return res
        for w in workers:
            cg.add(w.proc.pid)
        oom0 = cg.oom_kills()
        t0 = time.monotonic()
        for w in workers:
            w.go()
        deadline = t0 + args.seconds + 10
        next_progress = t0 + 2
        while time.monotonic() < deadline:
            now = time.monotonic()
            cgs.append((now - t0, cg.usage(), cg.oom_kills() - oom0))
            if all(w.proc.poll() is not None for w in workers):
                break
            if now >= next_progress:
                next_progress += 2
                ss = [d for k, d in caches[0].lines if k == "S"][-10:]
                ops = sum(int(d["ops"]) for d in ss)
                hits = sum(int(d["hits"]) for d in ss)
                log("pressure:   %-24s t=%4.1fs  hit %5.1f%%  usage %4d MiB  cached %4d MiB  oom %d" % (
                    c.name, now - t0, 100.0 * hits / ops if ops else 0, cgs[-1][1] // MIB,
                    int(ss[-1]["cached"]) // MIB if ss else 0, cgs[-1][2]))
            time.sleep(0.05)
    finally:
        for w in caches + ([cot] if cot else []):
            w.kill()
        removed = cg.remove()
    res["cgroup_removed"] = removed
    res["cgroup_version"] = cg.version
    res["oom_kills"] = max([x[2] for x in cgs] + [0])
    res["cotenant_died"] = cot.died_by()
    res["t0"] = t0
    res["cgroup"] = cgs
    res["caches"] = []
    for w in caches:
        ends = [d for k, d in w.lines if k == "END"]
        res["caches"].append({
            "died": w.died_by(), "samples": [dict(d, t=float(d["t"]) - t0) for k, d in w.lines if k == "S"],
            "end": ends[-1] if ends else None, "stderr": w.stderr.strip()[-500:]})
    res["cotenant"] = [(float(d["t"]) - t0, int(d["mib"])) for k, d in cot.lines if k == "CT"]
    res["cotenant_left"] = [float(d["t"]) - t0 for k, d in cot.lines if k == "LEFT"]
    res["cotenant_waves"] = [{k: float(v) for k, v in d.items()} for k, d in cot.lines if k == "WAVE"]
    for wv in res["cotenant_waves"]:
        wv["arrive"] -= t0
        wv["full"] -= t0
    st = [d for k, d in cot.lines if k == "STALL"]
    res["cotenant_stall"] = {k: int(v) for k, v in st[-1].items()} if st else None
    return res


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


def rerender(args):
    raw = json.load(open(args.rerender))
    base = os.path.basename(args.rerender)
    mode = args.name or base[len("pressure-"):-len(".json")]
    out_dir = report_common.output_dir(args) if (args.out or args.save) else \
        os.path.dirname(os.path.abspath(args.rerender))
    pressure_report.write_outputs(raw, mode, out_dir, log)
    return 0


def on_sigterm(_signum, _frame):
    raise KeyboardInterrupt()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="ramp only, 64 MiB, 3.5 s per run, 4 contenders (CI)")
    ap.add_argument("--scenario", help="comma-separated scenarios to run (default: all; quick: ramp). Known: " +
                    ", ".join(s.name for s in pc.SCENARIOS))
    ap.add_argument("--limit-mib", type=int, help="cgroup limit (default 256; quick 64)")
    ap.add_argument("--seconds", type=float, help="serving time per run (default 10; quick 3.5)")
    ap.add_argument("--polls", default="10,50,200", help="adaptive poll periods, ms (the 50 and 200 ms ones run "
                    "in the ramp and spike scenarios only)")
    ap.add_argument("--mallocs", default="jemalloc,mimalloc", help="preloaded mallocs beside glibc (default "
                    "jemalloc,mimalloc; tcmalloc where installed; each --contender is added)")
    ap.add_argument("--budgets", default="", help="fixed LRU budgets, %% of the limit (default: none)")
    ap.add_argument("--only", help="comma-separated contender names to run, in every scenario selected")
    ap.add_argument("--build-ns-per-kib", type=int, default=1000, help="value rebuild cost (default 1000)")
    ap.add_argument("--zipf", type=float, help="Zipf exponent, overriding every scenario's")
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
        args.seconds = 3.5 if args.quick else 10
    mode = args.name or ("quick" if args.quick else "full")
    if args.rerender:
        return rerender(args)
    scenarios = pc.scenario_by_name(args.scenario.split(",") if args.scenario else
                                    (["ramp"] if args.quick else [s.name for s in pc.SCENARIOS]))
    polls = sorted(int(x) for x in args.polls.split(",") if x)
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
    given = [report_common.parse_contender(x)[0] for x in args.contender]
    preloads = [p for p in report_common.preload_contenders(args.contender, log, "pressure")
                if p[0] in args.mallocs.split(",") or p[0] in given]
    everyone = pc.contenders(polls, [int(x) for x in args.budgets.split(",") if x], preloads)
    only = args.only.split(",") if args.only else (pc.QUICK if args.quick else None)
    if only:
        unknown = [n for n in only if n not in [c.name for c in everyone]]
        if unknown:
            sys.exit("pressure: unknown contender(s): %s (known: %s)" % (
                ", ".join(unknown), ", ".join(c.name for c in everyone)))
    plan = [(sc, [c for c in everyone if c.name in only] if only else pc.for_scenario(everyone, sc, polls))
            for sc in scenarios]
    r = subprocess.run([os.path.join(bindir, "pressure_lru"), "--calibrate=%d" % args.build_ns_per_kib],
                       text=True, stdout=subprocess.PIPE)
    rounds = int(r.stdout.strip())
    cost_note = "~%d ns per KiB: %d mixing rounds per 8-byte word, calibrated once for all contenders" % (
        args.build_ns_per_kib, rounds)
    m = machine()
    runs = sum(len(cs) for _, cs in plan)
    log("pressure: %s mode, limit %d MiB, %g s per run, %d scenarios, %d runs; %s" % (
        mode, args.limit_mib, args.seconds, len(plan), runs, cost_note))
    results, n, began = {}, 0, time.monotonic()
    try:
        for sc, cs in plan:
            results[sc.name] = {}
            for c in cs:
                n += 1
                log("pressure: [%d/%d] %s / %s" % (n, runs, sc.name, c.name))
                res = run_one(args, sc, c, n, bindir, rounds)
                if "rejected" not in res and not any(x["samples"] for x in res["caches"]):
                    res["rejected"] = "no samples (cache %s): %s" % (res["caches"][0]["died"],
                                                                      res["caches"][0]["stderr"])
                if "rejected" in res:
                    log("pressure:   -> rejected: %s" % res["rejected"])
                else:
                    sm = pressure_report.summarize(res, sc, args.seconds)
                    log("pressure:   -> hit %.3f, %.0f ops/s, OOM kills %d (%s), wrong %d, co-tenant obtain %s ms, "
                        "stall p99 %s ms" % (sm["hit_rate"], sm["ops_per_s"], res["oom_kills"], sm["killed"],
                                             sm["wrong"], pressure_report.fmt(sm["obtain_ms"]),
                                             pressure_report.fmt(sm["stall_p99_ms"], "%.2f")))
                results[sc.name][c.name] = res
    except NoCgroup as e:
        log("pressure: cannot run without a memory limit: %s" % e)
        return 3
    except KeyboardInterrupt:
        log("pressure: interrupted; workers killed, cgroups removed")
        return 130
    m["load"] = " ".join("%.1f" % x for x in os.getloadavg())
    raw = {"machine": m, "command": command, "quick": args.quick, "limit_mib": args.limit_mib,
           "seconds": args.seconds, "rounds": rounds, "cost_note": cost_note, "cotenant_share": args.cotenant_share,
           "zipf_override": args.zipf, "polls": polls, "wall_s": time.monotonic() - began,
           "scenarios": [sc.name for sc, _ in plan], "results": results}
    pressure_report.write_outputs(raw, mode, out_dir, log)
    log("pressure: results are in %s%s" % (out_dir, "" if args.save else " (--save writes bench/results/)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
