#!/usr/bin/env python3
"""RocksDB under cgroup pressure: the stock db_bench reading a DB several
times the memory limit through different block caches, beside a co-tenant.

    bazel run -c opt //bench:rocksdb                          # 384 MiB, 40 s a run
    bazel run -c opt //bench:rocksdb -- --workloads=readrandom-skew --rounds=2
    bazel run -c opt //bench:rocksdb -- --quick               # small DB, 96 MiB, 12 s

The DB (db_bench fillrandom + compact, LZ4, --num keys of --value-size bytes)
is built once outside any cgroup and kept under $TMPDIR/dropalloc-bench (or
/tmp/dropalloc-bench), as is the truth driver's DB of values derived from
their keys. Every run is a fresh child memory cgroup (bench/pressure.py's
Cgroup) holding db_bench and the co-tenant (//bench:pressure_cotenant),
which takes --cotenant-mib of ordinary memory from t=10 s over 5 s, holds it
until t=25 s and exits. db_bench reads with --use_direct_reads, so the page
cache does not stand in for the block cache, 2 threads, and prints its
progress every second (--stats_interval_seconds), which is what survives an
OOM kill.

Contenders (sizes follow --limit-mib; at 384 MiB):
  lru-safe           LRU block cache of 1/3 of the limit (128 MiB): survives
  lru-fill           LRU of 80% of the limit (307 MiB)
  lru+compressed     LRU 1/12 (32 MiB) + RocksDB's CompressedSecondaryCache of
                     60% of the limit (230 MiB)
  lru+dropalloc      LRU 1/12 + dropalloc secondary cache, no fixed capacity
  lru+dropalloc-cap  LRU 1/12 + dropalloc secondary cache of 60% of the limit
  lru-big+dropalloc  LRU 1/4 (96 MiB) + dropalloc secondary cache, no fixed
                     capacity: a primary that still fits beside the co-tenant
  lru+dropalloc-pressure  LRU 1/12 + dropalloc secondary cache with
                     budget=pressure: it sheds blocks itself above 90% of the
                     cgroup limit (down to 80%) and trims what it freed
The dropalloc ones preload bazel-bin/integrations/rocksdb/librocksdb_dropalloc.so.

Beside the throughput runs, the truth driver (//bench:rocksdb_truth) reads
its own DB through the dropalloc configurations under the same pressure and
counts values that are not the ones derived from their keys.

Writes rocksdb-<mode>.{md,json} and rocksdb-<mode>-ops.svg (gnuplot) to --out
DIR (default $TMPDIR/dropalloc-bench), or with --save to bench/results/.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import report_common  # noqa: E402
from pressure import Cgroup, NoCgroup, Worker, log, own_memory_cgroup  # noqa: E402

MIB = 1 << 20
PLUGIN = "integrations/rocksdb/librocksdb_dropalloc.so"
# The co-tenant's timeline (seconds from the start): ramp from START over
# RAMP, hold until START + RAMP + HOLD, then exit.
START, RAMP, HOLD = 10.0, 5.0, 10.0
WORKLOADS = {
    # name: (db_bench benchmark, extra flags, truth driver's --exp_range)
    "readrandom-skew": ("readrandom", ["--read_random_exp_range=10"], 10),
    "readrandom-uniform": ("readrandom", ["--read_random_exp_range=0"], 0),
    "multireadrandom-skew": ("multireadrandom", ["--read_random_exp_range=10", "--multiread_batched=true",
                                                 "--batch_size=8"], 10),
}


def contenders(limit):
    """(name, LRU bytes, secondary cache URI or None)."""
    primary = limit // 12
    second = limit * 6 // 10
    return [
        ("lru-safe", limit // 3, None),
        ("lru-fill", limit * 8 // 10, None),
        ("lru+compressed", primary, "compressed_secondary_cache://capacity=%d" % second),
        ("lru+dropalloc", primary, "dropalloc://"),
        ("lru+dropalloc-cap", primary, "dropalloc://capacity=%d" % second),
        ("lru-big+dropalloc", limit // 4, "dropalloc://"),
        ("lru+dropalloc-pressure", primary, "dropalloc://budget=pressure"),
    ]


# --- the DBs -------------------------------------------------------------------------

def db_dir(args, kind):
    return os.path.join(args.cache_dir, "rocksdb-%s-%dx%d-lz4" % (kind, args.num, args.value_size))


def ensure_db(args, db_bench, truth):
    """Builds the two DBs once; a finished one has a .complete marker."""
    for kind, argv in (
            ("dbbench", [db_bench, "--benchmarks=fillrandom,compact", "--num=%d" % args.num,
                         "--value_size=%d" % args.value_size, "--compression_type=lz4", "--disable_wal=1",
                         "--seed=1"]),
            ("truth", [truth, "--build", "--num=%d" % args.num])):
        d = db_dir(args, kind)
        if os.path.isfile(os.path.join(d, ".complete")):
            continue
        shutil.rmtree(d, ignore_errors=True)
        log("rocksdb: building %s (once; kept for later runs)" % d)
        t = time.monotonic()
        r = subprocess.run(argv + ["--db=" + d], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if r.returncode != 0:
            sys.exit("rocksdb: building %s failed:\n%s" % (d, r.stdout[-2000:]))
        open(os.path.join(d, ".complete"), "w").close()
        log("rocksdb: built in %.0f s" % (time.monotonic() - t))
    return {kind: db_dir(args, kind) for kind in ("dbbench", "truth")}


def du_mib(d):
    return sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d)) / MIB


# --- one run -------------------------------------------------------------------------

class DbBench(Worker):
    """db_bench started by a shell that waits for the go byte on stdin, so
    that it is in the cgroup before it allocates anything; go() and kill()
    are the pressure workers' (db_bench prints no READY line)."""
    THREAD = re.compile(r"thread (\d+): \((\d+),(\d+)\) ops")

    def __init__(self, argv, env):  # pylint: disable=super-init-not-called
        self.proc = subprocess.Popen(["/bin/sh", "-c", 'head -c 1 >/dev/null && exec "$@"', "sh"] + argv, env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, bufsize=1)
        self.progress = []  # (arrival time, thread, cumulative ops)
        self.text = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.err_reader = self.reader  # stderr goes to the same pipe

    def _read(self):
        for line in self.proc.stdout:
            m = self.THREAD.search(line)
            if m:
                self.progress.append((time.monotonic(), int(m.group(1)), int(m.group(3))))
            else:
                self.text.append(line)


def ops_at(progress, t):
    """Total operations of all threads reported by time t."""
    last = {}
    for at, th, ops in progress:
        if at <= t:
            last[th] = ops
    return sum(last.values())


def run_one(args, index, name, lru, uri, workload, tools, dbs, truth):
    """One contender (db_bench, or the truth driver) in a fresh cgroup."""
    limit = args.limit_mib * MIB
    bench, extra, exp_range = WORKLOADS[workload]
    env = dict(os.environ)
    if uri and uri.startswith("dropalloc://") and not truth:
        env["LD_PRELOAD"] = tools["plugin"]
        env["DROPALLOC_STATS"] = "1"
    if truth:
        argv = [tools["truth"], "--db=" + dbs["truth"], "--num=%d" % args.num, "--seconds=%g" % args.seconds,
                "--threads=2", "--cache_size=%d" % lru, "--exp_range=%g" % exp_range]
        if uri:
            argv.append("--secondary_cache_uri=" + uri)
    else:
        argv = [tools["db_bench"], "--db=" + dbs["dbbench"], "--use_existing_db=1", "--benchmarks=" + bench,
                "--num=%d" % args.num, "--value_size=%d" % args.value_size, "--threads=2",
                "--duration=%d" % args.seconds, "--use_direct_reads=true", "--cache_size=%d" % lru,
                "--cache_type=lru_cache", "--statistics", "--histogram", "--stats_interval_seconds=1"] + extra
        if uri:
            argv.append("--secondary_cache_uri=" + uri)
    res = {"name": name, "workload": workload, "truth": truth, "lru_bytes": lru, "uri": uri, "argv": argv}
    cg = Cgroup("dropalloc-rocksdb-%d-%d" % (os.getpid(), index), limit)
    procs = []
    samples = []
    try:
        cot = Worker([tools["cotenant"], "--mib=%d" % args.cotenant_mib, "--start=%g" % START,
                      "--ramp=%g" % RAMP, "--hold=%g" % HOLD])
        procs.append(cot)
        main = Worker(argv, env) if truth else DbBench(argv, env)
        procs.append(main)
        for p in procs:
            cg.add(p.proc.pid)
        oom0 = cg.oom_kills()
        t0 = time.monotonic()
        cot.go()
        main.go()
        deadline = t0 + args.seconds + 60  # DB open and the final statistics
        next_progress = t0 + 5
        while time.monotonic() < deadline and main.proc.poll() is None:
            now = time.monotonic()
            samples.append((now - t0, cg.usage(), cg.oom_kills() - oom0))
            if now >= next_progress:
                next_progress += 5
                log("rocksdb:   %-18s %-21s t=%4.0fs usage %4d MiB oom %d" % (
                    name, workload + (" truth" if truth else ""), now - t0, samples[-1][1] // MIB, samples[-1][2]))
            time.sleep(0.1)
        samples.append((time.monotonic() - t0, cg.usage(), cg.oom_kills() - oom0))
        # Still running past the deadline: stalled; the kill below is ours.
        res["stopped_by_driver"] = main.proc.poll() is None
    finally:
        for p in procs:
            p.kill()
        removed = cg.remove()
    res["cgroup_removed"] = removed
    res["cgroup_version"] = cg.version
    res["oom_kills"] = max([s[2] for s in samples] + [0])
    res["peak_mib"] = max([s[1] for s in samples] + [0]) / MIB
    res["usage"] = samples
    rc = main.proc.returncode
    res["main_died"] = "SIGKILL" if rc == -9 else (None if rc == 0 else "exit/signal %s" % rc)
    res["cotenant_died"] = cot.died_by()
    cot_ct = [(float(d["t"]) - t0, int(d["mib"])) for k, d in cot.lines if k == "CT"]
    res["cotenant_peak_mib"] = max([m for _, m in cot_ct] + [0])
    if truth:
        summarize_truth(res, main, t0)
    else:
        summarize_db_bench(res, main, t0, args.seconds)
    return res


def phases(seconds):
    return {"before": (0.0, START), "during": (START, START + RAMP + HOLD), "after": (START + RAMP + HOLD, seconds)}


def summarize_db_bench(res, b, t0, seconds):
    text = "".join(b.text)
    prog = [(at - t0, th, ops) for at, th, ops in b.progress]
    res["progress"] = prog
    # db_bench starts its clock once the DB is open; so do the phases.
    first = [t for t, _, _ in prog]
    start = first[0] - 1.0 if first else 0.0  # the first report comes ~1 s in
    res["start"] = start
    for ph, (lo, hi) in phases(seconds).items():
        lo_t, hi_t = start + lo, start + hi
        if prog and prog[-1][0] >= hi_t - 1.5:
            res["ops_" + ph] = (ops_at(prog, hi_t) - ops_at(prog, lo_t)) / (hi - lo)
        else:
            res["ops_" + ph] = None  # not alive through the phase
    m = re.search(r"^\w+\s*:\s*[\d.]+ micros/op (\d+) ops/sec ([\d.]+) seconds (\d+) operations", text, re.M)
    if m:
        res["ops_whole"] = float(m.group(1))
        res["completed"] = True
    else:
        last_t = prog[-1][0] if prog else 0
        res["ops_whole"] = ops_at(prog, 1e9) / max(last_t - start, 1e-9) if prog else 0.0
        res["completed"] = False
        res["died_at"] = last_t - start
    m = re.search(r"P99: ([\d.]+)", text)
    res["p99_us"] = float(m.group(1)) if m else None

    def stat(name):
        m = re.search(r"^rocksdb\.%s COUNT : (\d+)" % re.escape(name), text, re.M)
        return int(m.group(1)) if m else None
    res["block_cache_hit"] = stat("block.cache.hit")
    res["block_cache_miss"] = stat("block.cache.miss")
    res["secondary_hits"] = stat("secondary.cache.hits")
    m = re.search(r"^\s+drops_detected: (\d+)", text, re.M)
    res["drops_detected"] = int(m.group(1)) if m else None
    m = re.search(r"^\s+inserts: (\d+)", text, re.M)
    res["sec_inserts"] = int(m.group(1)) if m else None
    res["tail"] = text[-1500:] if not res["completed"] else ""


def summarize_truth(res, w, t0):
    ends = [d for k, d in w.lines if k == "END"]
    ss = [d for k, d in w.lines if k == "S"]
    sec = {}
    for k, d in w.lines:
        if k == "SEC":
            sec.update(d)
    res["completed"] = bool(ends)
    last = ends[-1] if ends else (ss[-1] if ss else {})
    res["reads"] = int(last.get("ops", 0))
    res["wrong"] = int(last.get("wrong", 0))
    res["missing"] = int(last.get("missing", 0)) if ends else None
    res["ops_whole"] = res["reads"] / float(ends[-1]["seconds"]) if ends else None
    res["drops_detected"] = int(sec["drops_detected"]) if "drops_detected" in sec else None
    res["secondary_hits"] = int(sec["hits"]) if "hits" in sec else None
    res["stderr"] = w.stderr.strip()[-500:]


# --- report --------------------------------------------------------------------------

def fmt(v, spec="%.0f", none="–"):
    return none if v is None else spec % v


def describe(r):
    """The cache configuration in words: LRU size and secondary cache."""
    d = "LRU %d MiB" % (r["lru_bytes"] // MIB)
    uri = r["uri"]
    if uri:
        m = re.search(r"capacity=(\d+)", uri)
        kind = "compressed" if uri.startswith("compressed") else "dropalloc"
        d += " + %s %s" % (kind, "%d MiB" % (int(m.group(1)) // MIB) if m else "(no fixed capacity)")
        if "budget=pressure" in uri:
            d += ", sheds above 90% of the limit"

    return d


def killed(r):
    who = []
    if r.get("stopped_by_driver"):
        return "stalled past the deadline: stopped by the driver (not an OOM kill)"
    if r["main_died"]:
        who.append(("db_bench" if not r["truth"] else "truth driver") + " (%s)" % r["main_died"])
    if r["cotenant_died"]:
        who.append("co-tenant (%s)" % r["cotenant_died"])
    return ", ".join(who) or "nobody"


def report(args, results, m, command, dbs_info):
    L = ["# RocksDB secondary cache under cgroup pressure (%s)" % ("quick" if args.quick else "full"), ""]
    L.append("Machine: %s; %s CPUs (%s), %s RAM, kernel %s; load average at the start %s; RocksDB %s (Debian, "
             "assertions on). Other jobs shared the machine: compare rows of one run, not absolute figures "
             "across runs." % (m["date"], m["nproc"], m["cpu"], m["memory"], m["kernel"], m["load"], m["rocksdb"]))
    L.append("")
    L.append("Setup: child memory cgroup of %d MiB per run; DB of %d keys x %d B (db_bench fillrandom + compact, LZ4): "
             "%.0f MiB on disk; stock db_bench, 2 threads, %d s, `--use_direct_reads=true`; co-tenant of %d MiB "
             "of ordinary memory from t=%g s over %g s, held until t=%g s. Phases: before [0,%g), during [%g,%g), "
             "after [%g,%d) s of db_bench's own clock." % (
                 args.limit_mib, args.num, args.value_size, dbs_info["dbbench_mib"], args.seconds,
                 args.cotenant_mib, START, RAMP, START + RAMP + HOLD, START, START, START + RAMP + HOLD,
                 START + RAMP + HOLD, args.seconds))
    L.append("")
    L.append("Command: `%s`" % command)
    for wl in args.workloads:
        rows = [r for r in results if r["workload"] == wl and not r["truth"]]
        if not rows:
            continue
        L += ["", "## %s" % wl, "",
              "| contender | block cache | round | ops/s whole run | before | during | after | block cache hits | "
              "secondary hits | drops detected | p99 µs | OOM kills | killed | peak cgroup MiB |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            whole = fmt(r["ops_whole"])
            if not r["completed"]:
                whole += " (until killed at %.0f s)" % r.get("died_at", 0)
            L.append("| %s | %s | %d | %s | %s | %s | %s | %s | %s | %s | %s | %d | %s | %.0f |" % (
                r["name"], describe(r), r["round"], whole,
                fmt(r["ops_before"]), fmt(r["ops_during"]), fmt(r["ops_after"]),
                fmt(r["block_cache_hit"], "%d"), fmt(r["secondary_hits"], "%d"), fmt(r["drops_detected"], "%d"),
                fmt(r["p99_us"], "%.1f"), r["oom_kills"], killed(r), r["peak_mib"]))
    truths = [r for r in results if r["truth"]]
    if truths:
        L += ["", "## Truth driver (values derived from keys, same cgroup, co-tenant and cache configuration)", "",
              "| contender | workload | round | reads | wrong | not found | ops/s | secondary hits | drops detected "
              "| OOM kills | killed | peak cgroup MiB |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in truths:
            L.append("| %s | %s | %d | %d | **%d** | %s | %s | %s | %s | %d | %s | %.0f |" % (
                r["name"], r["workload"], r["round"], r["reads"], r["wrong"], fmt(r["missing"], "%d"),
                fmt(r["ops_whole"]), fmt(r["secondary_hits"], "%d"), fmt(r["drops_detected"], "%d"),
                r["oom_kills"], killed(r), r["peak_mib"]))
    L += ["", "Notes: ops/s per phase come from db_bench's per-second progress lines (all threads), which is all a "
          "killed run leaves; the whole-run figure of a completed run is db_bench's own. Secondary hits are "
          "counted inside block cache hits. OOM kills: the cgroup's own counter; who was killed: the exit "
          "status of each process. p99 from db_bench's --histogram (completed runs only)."]
    return "\n".join(L) + "\n"


def targets(args, results):
    L = []
    for wl in args.workloads:
        rows = [r for r in results if r["workload"] == wl and not r["truth"]]
        if not rows:
            continue

        def mean(name):
            xs = [r["ops_whole"] for r in rows if r["name"] == name]
            return sum(xs) / len(xs) if xs else None
        survivors = {r["name"] for r in rows} - {r["name"] for r in rows if r["oom_kills"] or r["main_died"]
                                                 or r["cotenant_died"]}
        others = [(mean(n), n) for n in survivors if "dropalloc" not in n]
        best = max(others) if others else (None, None)
        for name in ("lru+dropalloc", "lru+dropalloc-cap", "lru-big+dropalloc", "lru+dropalloc-pressure"):
            d = [r for r in rows if r["name"] == name]
            if not d:
                continue
            d_ooms = sum(r["oom_kills"] for r in d)
            dv = mean(name)
            line = "- %s: %s %s ops/s, %d OOM kills in its runs (target 0: **%s**)" % (
                wl, name, fmt(dv), d_ooms, "met" if d_ooms == 0 else "missed")
            if best[0]:
                ratio = dv / best[0]
                line += "; best contender without dropalloc and without an OOM kill: %s at %s ops/s, ratio " \
                        "%.2fx (target >= 1.3x: **%s**)." % (best[1], fmt(best[0]), ratio,
                                                            "met" if ratio >= 1.3 else "missed")
            else:
                line += "; no contender without dropalloc survived: no ratio."
            L.append(line)
    truths = [r for r in results if r["truth"]]
    if truths:
        wrong = sum(r["wrong"] for r in truths)
        L.append("- Truth driver: %d wrong values in %d reads over %d runs (target 0): **%s**." % (
            wrong, sum(r["reads"] for r in truths), len(truths), "met" if wrong == 0 else "missed"))
    return L


def plot(base, results, args, m):
    gp = shutil.which("gnuplot")
    if not gp:
        return "gnuplot not installed"
    dat = base + "-ops.dat"
    svg = base + "-ops.svg"
    series = []
    with open(dat, "w") as f:
        for r in results:
            if r["truth"] or r["round"] != 1 or r["workload"] != args.workloads[0]:
                continue  # one workload: 7 lines are readable, 21 are not
            prog = r["progress"]
            f.write("# %s %s\n" % (r["workload"], r["name"]))
            last = None
            for t in range(1, args.seconds + 1):
                tt = r["start"] + t
                if not prog or prog[-1][0] < tt - 1.5:
                    break
                now = ops_at(prog, tt)
                if last is not None:
                    f.write("%d %.0f\n" % (t, now - last))
                last = now
            f.write("\n\n")
            series.append(r["name"])
    plots = ", ".join("'%s' index %d using 1:2 with lines lw 2 title %s" % (dat, i, report_common.gp_str(s))
                      for i, s in enumerate(series))
    script = "\n".join([
        "set terminal svg size 1100,600 dynamic noenhanced",
        "set output %s" % report_common.gp_str(svg + ".tmp"),
        "set title %s" % report_common.gp_str("db_bench %s ops/s, %d MiB cgroup; grey: co-tenant ramps and holds "
                                             "%d MiB\n%s" % (args.workloads[0], args.limit_mib, args.cotenant_mib,
                                                              report_common.machine_label(m))),
        "set xlabel 'seconds'", "set ylabel 'ops/s'", "set key outside right",
        "set object 1 rect from %g, graph 0 to %g, graph 1 fc rgb '#eeeeee' behind" % (START, START + RAMP + HOLD),
        "plot " + plots if plots else "plot 0 notitle", ""])
    return report_common.run_gnuplot(gp, script, svg, dat)


def machine():
    f = report_common.machine_facts(("librocksdb7.8", "rocksdb-tools"))
    u = f["uname"]
    return {"nproc": f["nproc"], "cpu": f["cpu"], "memory": f["memory"], "kernel": "%s %s" % (u.release, u.machine),
            "uname": u, "date": f["date"], "load": f["load"], "rocksdb": f["versions"]["librocksdb7.8"]}


def find_tools(args):
    bindir = args.bin_dir or os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(bindir)
    tools = {"cotenant": os.path.join(bindir, "pressure_cotenant"), "truth": os.path.join(bindir, "rocksdb_truth"),
             "plugin": os.path.join(root, PLUGIN), "db_bench": shutil.which("db_bench") or "/usr/bin/db_bench"}
    for k, p in tools.items():
        if not os.path.isfile(p):
            sys.exit("rocksdb: %s not found at %s (%s)" % (k, p, "Debian package rocksdb-tools; scripts/setup.sh "
                                                           "installs it" if k == "db_bench" else
                                                           "run through `bazel run -c opt //bench:rocksdb`"))
    tools["plugin"] = os.path.abspath(tools["plugin"])
    return tools


def write_outputs(args, out_dir, results, m, command, info):
    text = report(args, results, m, command, info)
    text += "\n## Against the targets\n\n" + "\n".join(targets(args, results)) + "\n"
    mode = "quick" if args.quick else "full"
    base = os.path.join(out_dir, "rocksdb-" + mode)
    err = plot(base, results, args, m)
    text += "\n" + ("Plot: not drawn (%s).\n" % err if err else "Plot: [ops/s over time](rocksdb-%s-ops.svg).\n" % mode)
    report_common.write_atomically(base + ".md", text)
    m = {k: v for k, v in m.items() if k != "uname"}
    report_common.write_atomically(base + ".json", json.dumps(
        {"machine": m, "command": command, "db": info, "quick": args.quick, "limit_mib": args.limit_mib,
         "seconds": args.seconds, "num": args.num, "value_size": args.value_size, "cotenant_mib": args.cotenant_mib,
         "workloads": args.workloads, "results": results}, indent=1, default=str))
    print(text)
    log("rocksdb: wrote %s.md, %s.json" % (base, base))


def rerender(args):
    raw = json.load(open(args.rerender))
    args.quick = raw.get("quick", os.path.basename(args.rerender) == "rocksdb-quick.json")
    args.limit_mib, args.seconds, args.cotenant_mib = raw["limit_mib"], raw["seconds"], raw["cotenant_mib"]
    args.num = raw.get("num", 400000 if args.quick else 2500000)
    args.value_size = raw.get("value_size", args.value_size)
    results = raw["results"]
    args.workloads = raw.get("workloads") or list(dict.fromkeys(r["workload"] for r in results))
    info = raw["db"]
    info.setdefault("dbbench_mib", 0)
    write_outputs(args, os.path.dirname(os.path.abspath(args.rerender)), results, raw["machine"], raw["command"],
                  info)
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a small DB, 96 MiB, 12 s a run")
    ap.add_argument("--limit-mib", type=int, help="cgroup limit (default 384; quick 96)")
    ap.add_argument("--seconds", type=int, help="db_bench --duration (default 40; quick 30)")
    ap.add_argument("--num", type=int, help="keys in the DB (default 2500000; quick 400000)")
    ap.add_argument("--value-size", type=int, default=400)
    ap.add_argument("--cotenant-mib", type=int, help="co-tenant's peak (default 60%% of the limit)")
    ap.add_argument("--workloads", default=",".join(WORKLOADS), help="comma-separated, of: " + ", ".join(WORKLOADS))
    ap.add_argument("--only", help="comma-separated contender names (default: all)")
    ap.add_argument("--rounds", type=int, default=1, help="runs of each contender, alternated")
    ap.add_argument("--truth", default="lru+dropalloc,lru+dropalloc-cap,lru-big+dropalloc,lru+dropalloc-pressure",
                    help="contenders the truth driver runs as (comma-separated; 'none' for none)")
    ap.add_argument("--bin-dir", help="directory holding pressure_cotenant and rocksdb_truth (default: runfiles)")
    ap.add_argument("--cache-dir", help="where the DBs are kept (default $TMPDIR/dropalloc-bench)")
    report_common.add_output_args(ap, "rocksdb")
    ap.add_argument("--rerender", metavar="JSON", help="write the report of an earlier run's JSON again, beside it")
    args = ap.parse_args()
    if args.rerender:
        return rerender(args)
    args.limit_mib = args.limit_mib or (96 if args.quick else 384)
    args.seconds = args.seconds or (30 if args.quick else 40)
    args.num = args.num or (400000 if args.quick else 2500000)
    args.cotenant_mib = args.cotenant_mib or args.limit_mib * 6 // 10
    args.workloads = [w for w in args.workloads.split(",") if w]
    for w in args.workloads:
        if w not in WORKLOADS:
            sys.exit("rocksdb: unknown workload %s (known: %s)" % (w, ", ".join(WORKLOADS)))
    args.cache_dir = args.cache_dir or os.path.join(os.environ.get("TMPDIR") or "/tmp", "dropalloc-bench")
    os.makedirs(args.cache_dir, exist_ok=True)
    if args.seconds < START + RAMP + HOLD + 5:
        sys.exit("rocksdb: --seconds must leave time after the co-tenant leaves (>= %g)" % (START + RAMP + HOLD + 5))
    try:
        own_memory_cgroup()
    except NoCgroup as e:
        log("rocksdb: no child memory cgroup can be made: %s" % e)
        return 3
    tools = find_tools(args)
    out_dir = report_common.output_dir(args)
    dbs = ensure_db(args, tools["db_bench"], tools["truth"])
    cs = contenders(args.limit_mib * MIB)
    if args.only:
        names = set(args.only.split(","))
        unknown = names - {c[0] for c in cs}
        if unknown:
            sys.exit("rocksdb: unknown contenders %s (known: %s)" % (", ".join(sorted(unknown)),
                                                                    ", ".join(c[0] for c in cs)))
        cs = [c for c in cs if c[0] in names]
    truth_names = set() if args.truth == "none" else set(args.truth.split(","))
    m = machine()
    command = "bazel run -c opt //bench:rocksdb -- " + " ".join(sys.argv[1:])
    results = []
    index = 0
    try:
        for rnd in range(1, args.rounds + 1):
            for wl in args.workloads:
                order = cs if rnd % 2 else list(reversed(cs))  # alternate the order between rounds
                for name, lru, uri in order:
                    index += 1
                    r = run_one(args, index, name, lru, uri, wl, tools, dbs, False)
                    r["round"] = rnd
                    results.append(r)
                    log("rocksdb: %s %s: %s ops/s, OOM kills %d, killed %s" % (
                        wl, name, fmt(r["ops_whole"]), r["oom_kills"], killed(r)))
                for name, lru, uri in cs:
                    if name in truth_names and wl == args.workloads[0]:
                        index += 1
                        r = run_one(args, index, name, lru, uri, wl, tools, dbs, True)
                        r["round"] = rnd
                        results.append(r)
                        log("rocksdb: truth %s: %d reads, %d wrong, OOM kills %d" % (
                            name, r["reads"], r["wrong"], r["oom_kills"]))
    except KeyboardInterrupt:
        log("rocksdb: interrupted; workers killed, cgroups removed; reporting what ran")
    info = {"dbbench_mib": du_mib(dbs["dbbench"]), "truth_mib": du_mib(dbs["truth"])}
    write_outputs(args, out_dir, results, m, command, info)
    return 0


if __name__ == "__main__":
    sys.exit(main())
