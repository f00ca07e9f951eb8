#!/usr/bin/env python3
"""Side-by-side allocator comparison: dropalloc against glibc, jemalloc,
mimalloc and the std::pmr pool resources, on this machine.

    bazel run -c opt //bench:compare -- --quick    # CI smoke: 1 rep, tiny sizes
    bazel run -c opt //bench:compare -- --full     # 5 reps, the README table

Contenders, each in its own process:
  glibc             the binaries as built (glibc 2.36 malloc)
  jemalloc          LD_PRELOAD of Debian's libjemalloc.so.2 (default options)
  mimalloc          LD_PRELOAD of Debian's libmimalloc.so.2 (default options)
  tcmalloc          LD_PRELOAD of Debian's libtcmalloc_minimal.so.4, where
                    installed (libtcmalloc-minimal4)
  NAME              LD_PRELOAD of PATH, for each --contender NAME=PATH
  dropalloc-malloc  LD_PRELOAD of bazel-bin/allocator/libdropalloc.so, built
                    here with `bazel build -c opt //allocator:libdropalloc.so`
  dropalloc-pmr     dropalloc::droppable_resource, in-process (micro only)
  sync_pool         std::pmr::synchronized_pool_resource (micro only)
  unsync_pool       std::pmr::unsynchronized_pool_resource (micro only)
Preloading one plain binary makes every malloc-level contender like-for-like.
Debian's jemalloc and mimalloc replace malloc for a whole process, so nothing
is compared inside one process except the pmr resources (whose upstream is
glibc). A contender that cannot run is reported as "not available: <reason>",
never dropped and never substituted.

Runs alternate: for every repetition and every workload, each contender runs
once (A B C A B C ...), starting with a different contender each repetition,
so slow drifts of this shared machine hit everyone alike. Reported: medians
over repetitions and ratios to mimalloc.

Guards against the known traps:
  - each workload reports which library its malloc comes from (dlsym +
    dladdr) and which allocator libraries /proc/self/maps holds; a run whose
    allocator is not the contender's is rejected (a preload that did not take);
  - workloads time their own work loop, not process start-up or exit, and
    full runs flag results under 0.1 s as start-up dominated;
  - malloc/free pairs escape through an asm barrier and memory is touched, so
    the compiler cannot delete them; micro sizes are exact size classes;
  - single-threaded runs (workloads, micro rows, real programs) are pinned:
    every contender's runs of one workload in one repetition to one CPU, the
    fastest by bench/cpu_probe just before (--cpu; bench/cpu_pin.py says why:
    a CPU of a shared machine may run slower for minutes at a time); a
    threaded workload's runs wait (up to 60 s) for a CPU in such a slow spell;
    the report says where runs went and what the probes showed.
Peak RSS is the workload's own VmHWM: a child's ru_maxrss from os.wait4 also
counts the pages of this Python process at the fork (measured: +200 MiB in the
parent shows up as +200 MiB in /bin/true's ru_maxrss), so it is kept in the
JSON only as a cross-check.

Real programs (bench/realprog.py): sqlite3, perl, python3 and a plain C++
container program, each run whole under every malloc-level contender with the
same alternation and repetitions; wall time and ru_maxrss of the whole
process, taken through bench/measure_exec so that the trap above does not
apply (checked with /bin/true on every run of this script), and ratios to the
best of glibc, jemalloc and mimalloc. Also an allocate-touch-free-idle trace
(bench/macro/idle_rss.c): the resident set after the frees, at the end of an
idle period and after malloc_trim(0). How each preload is verified there and
the sizes: realprog.py.

Files go to --out DIR (default $TMPDIR/dropalloc-bench), or with --save to
bench/results/ of the source tree, for a run meant to be committed. Quick mode
judges no targets: one short run checks only that the benchmark works.

Python standard library only; the plots are drawn by gnuplot if it is installed.
"""

import argparse
import datetime
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cpu_pin  # noqa: E402
import realprog  # noqa: E402
import report_common  # noqa: E402  (next to this file, also under bazel run)

MACRO = ["larson", "xmalloc", "cache_scratch", "glibc_simple", "rptest",
         "malloc_large", "mstress", "cfrac_like"]
MACRO_ABOUT = {
    "larson": "server churn, 8-1000 B, blocks handed to the next thread",
    "xmalloc": "1 thread allocates, another frees (mostly 64 B)",
    "cache_scratch": "passive false sharing, 8 B objects written 100x",
    "glibc_simple": "batches of 25-1600 blocks of 16/32/64 B, FIFO+LIFO frees",
    "rptest": "1000 live/thread, 8 B-16 KiB linear drop-off, cross-thread frees",
    "malloc_large": "5-25 MiB blocks, up to 20 live, one write per page",
    "mstress": "thread churn, power-of-two sizes, shared slots, realloc",
    "cfrac_like": "bignum arithmetic: many small short-lived blocks",
}
# Run on one CPU, the same for every contender (cpu_pin.py says why); the
# other workloads start threads and keep every CPU. The micro rows whose names
# start with a prefix in THREADED_MICRO start threads too.
SINGLE_THREADED = {"glibc_simple", "malloc_large", "cfrac_like"}
THREADED_MICRO = ("prodcons",)
SHIM_TARGET = "//allocator:libdropalloc.so"


class Contender:
    def __init__(self, name, alloc=None, preload=None, source="malloc"):
        self.name = name
        self.alloc = alloc          # what the workload must report (malloc contenders)
        self.preload = preload      # path for LD_PRELOAD, or None
        self.source = source        # alloc_micro source suffix
        self.unavailable = None     # reason, if it cannot run
        self.rejected = []          # runs refused (wrong allocator, crash)

    @property
    def malloc_level(self):
        return self.source == "malloc"

    def owns(self, alloc, malloc_from):
        """Whether a process whose malloc is `alloc` (workload.h's short name)
        from the file malloc_from ran under this contender. A library the
        workloads have no name for is recognised by its path."""
        return alloc == self.alloc or bool(
            self.preload and malloc_from and report_common.same_library(malloc_from, self.preload))


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def sh(cmd, **kw):
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def first_error(text):
    for line in text.splitlines():
        if "ERROR" in line or "no such target" in line:
            return line.strip()[:300]
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return lines[-1][:300] if lines else "no output"


def find_shim(args):
    """(path, None) or (None, reason)."""
    if args.shim:
        if os.path.isfile(args.shim):
            return os.path.abspath(args.shim), None
        return None, "--shim=%s does not exist" % args.shim
    ws = os.environ.get("BUILD_WORKSPACE_DIRECTORY")
    if not ws:
        return None, ("%s not built: run via `bazel run //bench:compare` (which builds it) "
                      "or pass --shim=PATH" % SHIM_TARGET)
    if args.no_build_shim:
        return None, "--no-build-shim given"
    log("compare: building %s (bazel build -c opt) ..." % SHIM_TARGET)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNFILES", "BUILD_", "TEST_"))}
    # The Bazel that runs this script (its output base holds the runfiles), so that
    # a `bazel --output_base=... run` does not start a second server here.
    here = os.path.abspath(__file__)
    bazel = ["bazel"] + (["--output_base=" + here.split("/execroot/", 1)[0]] if "/execroot/" in here else [])
    r = sh(bazel + ["build", "-c", "opt", SHIM_TARGET], cwd=ws, env=env)
    if r.returncode != 0:
        # Workspace-relative paths: the report is committed.
        return None, "`bazel build -c opt %s` failed: %s" % (
            SHIM_TARGET, first_error(r.stdout).replace(ws.rstrip("/") + "/", ""))
    info = subprocess.run(bazel + ["info", "-c", "opt", "bazel-bin"], cwd=ws, env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    path = os.path.join(info.stdout.strip().splitlines()[-1] if info.returncode == 0 else
                        os.path.join(ws, "bazel-bin"), "allocator", "libdropalloc.so")
    if not os.path.isfile(path):
        return None, "built, but %s is missing" % path
    return path, None


BUILT_IN = ("glibc", "dropalloc-malloc", "dropalloc-pmr", "sync_pool", "unsync_pool")


def make_contenders(args):
    cs = [Contender("glibc", alloc="glibc")]
    for name, path, why in report_common.preload_contenders(args.contender, log, "compare"):
        if name in BUILT_IN:
            sys.exit("compare: --contender %s: %s is built in (the shim: --shim=PATH)" % (name, name))
        c = Contender(name, alloc=name, preload=path)
        c.unavailable = why
        cs.append(c)
    shim, why = find_shim(args)
    dm = Contender("dropalloc-malloc", alloc="dropalloc", preload=shim)
    dm.unavailable = why
    cs += [dm,
           Contender("dropalloc-pmr", alloc="glibc", source="droppable"),
           Contender("sync_pool", alloc="glibc", source="sync_pool"),
           Contender("unsync_pool", alloc="glibc", source="unsync_pool")]
    return cs


def run(cmd, contender, timeout, cpu=None):
    """Runs cmd under the contender's preload, pinned to cpu unless None.
    Returns (rc, stdout, stderr, maxrss_kib, wall)."""
    env = dict(os.environ)
    env.pop("LD_PRELOAD", None)
    if contender.preload:
        env["LD_PRELOAD"] = contender.preload
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = datetime.datetime.now()
        p = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, preexec_fn=cpu_pin.pin_to(cpu))
        try:
            # os.wait4 instead of p.wait(): it also gives the child's rusage.
            _, status, ru = wait4_timeout(p, timeout)
        except TimeoutError:
            p.kill()
            os.waitpid(p.pid, 0)
            p.returncode = -9
            return -9, "", "timed out after %d s" % timeout, 0, timeout
        wall = (datetime.datetime.now() - t0).total_seconds()
        p.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return (p.returncode, out.read().decode(errors="replace"), err.read().decode(errors="replace"),
                ru.ru_maxrss, wall)


def wait4_timeout(p, timeout):
    import time
    deadline = time.monotonic() + timeout
    while True:
        pid, status, ru = os.wait4(p.pid, os.WNOHANG)
        if pid != 0:
            return pid, status, ru
        if time.monotonic() > deadline:
            raise TimeoutError
        time.sleep(0.005)


def parse_result(stdout):
    for line in stdout.splitlines():
        if line.startswith("RESULT "):
            return dict(kv.split("=", 1) for kv in line.split()[1:] if "=" in kv)
    return None


def machine():
    f = report_common.machine_facts()
    u = f.pop("uname")
    del f["load"]
    f.update(kernel="%s %s %s" % (u.system, u.release, u.version), arch=u.machine)
    return f


# --- the runs -------------------------------------------------------------------

def rotate(seq, k):
    k %= max(len(seq), 1)
    return seq[k:] + seq[:k]


def micro_filters(bindir, source):
    """(pinned, threaded): benchmark filters for alloc_micro's rows of one
    source, split as THREADED_MICRO says; None where no row falls."""
    r = subprocess.run([os.path.join(bindir, "alloc_micro"), "--benchmark_list_tests"], stdout=subprocess.PIPE,
                       stderr=subprocess.DEVNULL, text=True)
    names = [n for n in r.stdout.split() if n.endswith("/%s/real_time" % source)]
    threaded = [n for n in names if n.startswith(THREADED_MICRO)]
    single = [n for n in names if n not in threaded]
    anchored = lambda ns: "^(%s)$" % "|".join(ns) if ns else None  # noqa: E731
    return anchored(single), anchored(threaded)


def run_all(args, cs, bindir):
    reps = args.reps
    macro_cs = [c for c in cs if c.malloc_level and not c.unavailable]
    micro_cs = [c for c in cs if not c.unavailable]
    filters = {c.source: micro_filters(bindir, c.source) for c in micro_cs}  # the same every repetition
    workloads = [w for w in MACRO if not args.only or w in args.only]
    total = reps * (len(workloads) * len(macro_cs) + len(micro_cs) + 1)
    done = 0
    macro = {}   # (workload, contender) -> list of result dicts
    micro = {}   # (row, contender) -> list of ns per item
    seal = {}    # row -> list of (ns per block, ns per page)
    timeout = 120 if args.quick else 900
    min_time = "0.01" if args.quick else str(args.min_time)
    def group_cpu(label):
        cpu = args.pinning.for_group(label)
        if cpu is not None:
            log("compare: %s pinned to CPU %d" % (label, cpu))
        return cpu

    def threaded_group(label):
        slow = args.pinning.before_threaded_group(label)
        if slow:
            log("compare: %s runs with CPU %s in a slow spell" % (label, "/".join(map(str, slow))))

    for rep in range(reps):
        for w in workloads:
            pin = None
            if w in SINGLE_THREADED:
                pin = group_cpu("rep %d %s" % (rep + 1, w))
            else:
                threaded_group("rep %d %s" % (rep + 1, w))
            for c in rotate(macro_cs, rep):
                if c.unavailable:
                    continue
                cmd = [os.path.join(bindir, "macro_" + w)] + (["--quick"] if args.quick else [])
                rc, out, err, maxrss, wall = run(cmd, c, timeout, pin)
                done += 1
                res = parse_result(out)
                if rc != 0 or res is None:
                    c.rejected.append("%s: exit %d: %s" % (w, rc, (err.strip() or out.strip())[-200:]))
                    log("[%d/%d] rep %d/%d %-13s %-16s FAILED (exit %d)" % (done, total, rep + 1, reps, w, c.name, rc))
                    continue
                if not c.owns(res.get("alloc"), res.get("malloc_from")):
                    c.rejected.append("%s: workload reports malloc from %s (mapped: %s), expected %s" % (
                        w, res.get("malloc_from"), res.get("mapped"), c.alloc))
                    log("[%d/%d] rep %d/%d %-13s %-16s REJECTED: allocator is %s, not %s" % (
                        done, total, rep + 1, reps, w, c.name, res.get("alloc"), c.alloc))
                    continue
                res["ru_maxrss_kib"] = maxrss
                res["process_wall"] = wall
                macro.setdefault((w, c.name), []).append(res)
                log("[%d/%d] rep %d/%d %-13s %-16s %8.3f s  peak %8.1f MiB" % (
                    done, total, rep + 1, reps, w, c.name, float(res["seconds"]), int(res["hwm_kib"]) / 1024))
        micro_pin = group_cpu("rep %d micro" % (rep + 1))
        for c in rotate(micro_cs, rep):
            # The single-threaded rows pinned, the threaded ones (if any) in a
            # second run on every CPU; one line of the log for both.
            n, wall, failed = 0, 0.0, False
            for filt, pin in zip(filters[c.source], (micro_pin, None)):
                if filt is None:
                    continue
                cmd = [os.path.join(bindir, "alloc_micro"), "--benchmark_format=json",
                       "--benchmark_min_time=" + min_time, "--benchmark_filter=" + filt]
                if args.quick:
                    cmd.append("--quick")
                rc, out, err, _, took = run(cmd, c, timeout * 3, pin)
                wall += took
                try:
                    data = json.loads(out)
                except ValueError:
                    data = None
                if rc != 0 or data is None:
                    c.rejected.append("alloc_micro: exit %d: %s" % (rc, err.strip()[-200:]))
                    log("[%d/%d] rep %d/%d micro %-16s FAILED (exit %d)" % (done + 1, total, rep + 1, reps, c.name, rc))
                    failed = True
                    break
                got = data.get("context", {}).get("alloc")
                if not c.owns(got, data.get("context", {}).get("malloc_from")):
                    c.rejected.append("alloc_micro: malloc from %s (mapped: %s), expected %s" % (
                        data["context"].get("malloc_from"), data["context"].get("mapped"), c.alloc))
                    log("[%d/%d] micro %s REJECTED: allocator is %s" % (done + 1, total, c.name, got))
                    failed = True
                    break
                for b in data.get("benchmarks", []):
                    if b.get("error_occurred") or not b.get("items_per_second"):
                        continue
                    row = b["name"].replace("/real_time", "").rsplit("/", 1)[0]
                    micro.setdefault((row, c.name), []).append(1e9 / b["items_per_second"])
                    n += 1
            done += 1
            if not failed:
                log("[%d/%d] rep %d/%d micro %-16s %d rows in %.1f s" % (done, total, rep + 1, reps, c.name, n, wall))
        # Drop check and seal costs: droppable_resource only, no contender.
        cmd = [os.path.join(bindir, "seal_check_micro"), "--benchmark_format=json",
               "--benchmark_min_time=" + min_time] + (["--quick"] if args.quick else [])
        rc, out, err, _, wall = run(cmd, Contender("glibc", alloc="glibc"), timeout * 3,
                                    group_cpu("rep %d seal/check" % (rep + 1)))
        done += 1
        try:
            for b in json.loads(out).get("benchmarks", []):
                if b.get("error_occurred"):
                    continue
                ns = b["real_time"] * {"ns": 1, "us": 1e3, "ms": 1e6, "s": 1e9}[b["time_unit"]]
                seal.setdefault(b["name"].replace("/real_time", ""), []).append((ns / b["blocks"], ns / b["pages"]))
            log("[%d/%d] rep %d/%d seal/check micro in %.1f s" % (done, total, rep + 1, reps, wall))
        except (ValueError, KeyError) as e:
            log("[%d/%d] seal/check micro FAILED (exit %d): %s %s" % (done, total, rc, e, err.strip()[-200:]))
    return workloads, macro, micro, seal


# --- reporting --------------------------------------------------------------------

def med(xs):
    return statistics.median(xs) if xs else None


def geomean(xs):
    xs = [x for x in xs if x and x > 0]
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else None


def fmt_cell(v, ref, unit_fmt):
    if v is None:
        return "–"
    s = unit_fmt % v
    if ref:
        s += " (%.2f×)" % (v / ref)
    return s


def build_report(args, cs, m, workloads, macro, micro, seal, command, real):
    byname = {c.name: c for c in cs}
    macro_cs = [c for c in cs if c.malloc_level]
    L = []
    L.append("# Allocator comparison (%s mode)" % ("quick" if args.quick else "full"))
    L.append("")
    L.append("Command: `%s`  " % command)
    L.append("Date: %s; %d repetition(s), contenders alternated, medians shown; "
             "ratios (in parentheses) are to mimalloc, lower is better." % (m["date"], args.reps))
    L.append("")
    tc = m["versions"].get("libtcmalloc-minimal4", "?")
    L.append("Machine: %d CPUs, %s, %s; kernel %s (%s); glibc %s, jemalloc %s, mimalloc %s%s (Debian, "
             "default options), g++ %s, bazel -c opt." % (
                 m["nproc"], m["cpu"], m["memory"], m["kernel"], m["arch"], m["versions"]["libc6"],
                 m["versions"]["libjemalloc2"], m["versions"]["libmimalloc2.0"],
                 ", tcmalloc %s" % tc if tc != "?" else "", m["versions"]["g++"]))
    L.append("")
    if not args.pinning.pins:
        L.append("CPUs: every run on every CPU (no pinning).")
    else:
        L.append("CPUs: the single-threaded runs (%s, the micro rows but %s, the seal and check rows, the real "
                 "programs) pinned, every contender's runs of one of them in one repetition (a group) to one CPU: "
                 "%s. The threaded runs on every CPU." % (
                     ", ".join(w for w in MACRO if w in SINGLE_THREADED),
                     ", ".join(p + "*" for p in THREADED_MICRO), args.pinning.summary()))
        threaded = args.pinning.threaded_summary()
        if threaded:
            L.append("Threaded workloads: %s." % threaded)
    L.append("")
    L.append("## Contenders")
    L.append("")
    for c in cs:
        how = ("LD_PRELOAD=%s" % c.preload if c.preload else
               "as built (no preload)" if c.malloc_level else "in-process pmr resource (upstream: glibc)")
        status = ("**not available: %s**" % c.unavailable) if c.unavailable else how
        if c.rejected:
            status += "; %d run(s) rejected: %s" % (len(c.rejected), "; ".join(c.rejected[:3]))
        L.append("- %s: %s" % (c.name, status))
    L.append("")

    def ratio_ref(table, key_row):
        return med(table.get((key_row, "mimalloc"), []))

    # Macro: time and peak RSS.
    for title, field, scale, ufmt in (("time in seconds", "seconds", 1.0, "%.3f"),
                                      ("peak RSS in MiB (VmHWM)", "hwm_kib", 1 / 1024, "%.1f")):
        L.append("## Macro workloads: %s" % title)
        L.append("")
        L.append("| workload | " + " | ".join(c.name for c in macro_cs) + " |")
        L.append("|---|" + "---:|" * len(macro_cs))
        ratios = {c.name: [] for c in macro_cs}
        for w in workloads:
            vals = {}
            for c in macro_cs:
                rs = macro.get((w, c.name), [])
                vals[c.name] = med([float(r[field]) * scale for r in rs]) if rs else None
            ref = vals.get("mimalloc")
            cells = []
            for c in macro_cs:
                if c.unavailable:
                    cells.append("n/a")
                    continue
                cells.append(fmt_cell(vals[c.name], ref, ufmt))
                if vals[c.name] and ref:
                    ratios[c.name].append(vals[c.name] / ref)
            L.append("| %s | %s |" % (w, " | ".join(cells)))
        L.append("| **geometric mean of ratios** | %s |" % " | ".join(
            "n/a" if c.unavailable else ("%.2f×" % geomean(ratios[c.name]) if geomean(ratios[c.name]) else "–")
            for c in macro_cs))
        L.append("")
    L.append("Workloads (2 threads where threaded; fixed seeds): " + "; ".join(
        "%s: %s" % (w, MACRO_ABOUT[w]) for w in workloads) + ".")
    short = sorted({w for (w, _), rs in macro.items() if any(float(r["seconds"]) < 0.1 for r in rs)})
    if short and not args.quick:
        L.append("")
        L.append("Start-up warning: runs under 0.1 s in %s; treat those ratios with care." % ", ".join(short))
    L.append("")
    L.extend(realprog.report(real))

    # Micro.
    L.append("## Micro-benchmarks: ns per allocate+free pair (containers: per element)")
    L.append("")
    L.append("malloc-level columns run the same binary under each preload; the pmr columns call "
             "the resource through `std::pmr::memory_resource*`.")
    L.append("")
    rows = []
    for (row, _c) in micro:
        if row not in rows:
            rows.append(row)
    L.append("| benchmark | " + " | ".join(c.name for c in cs) + " |")
    L.append("|---|" + "---:|" * len(cs))
    for row in rows:
        ref = ratio_ref(micro, row)
        cells = []
        for c in cs:
            if c.unavailable:
                cells.append("n/a")
            else:
                cells.append(fmt_cell(med(micro.get((row, c.name), [])), ref, "%.1f"))
        L.append("| %s | %s |" % (row, " | ".join(cells)))
    L.append("")
    L.append("unsync_pool has no prodcons row: it is not thread-safe.")
    L.append("")

    # Seal / check.
    L.append("## Drop check and seal costs (dropalloc::droppable_resource)")
    L.append("")
    L.append("| operation | ns per block | ns per page |")
    L.append("|---|---:|---:|")
    for name, vs in seal.items():
        L.append("| %s | %.1f | %.1f |" % (name, med([v[0] for v in vs]), med([v[1] for v in vs])))
    L.append("")
    L.append("seal includes one store per page just before it (re-dirtying the page as a writer "
             "would) and the MADV_FREE; a block smaller than a page counts as one page. "
             "first_write and first_read: one store or load per page of blocks sealed (their pages "
             "advised) just before, the cost of touching a page the kernel was told it may drop, "
             "which the seal and seal_many rows include; rewrite: the same stores to blocks not "
             "sealed (pages not advised), the control.")
    L.append("")

    # Targets.
    L.append("## Targets")
    L.append("")
    if args.quick:
        # One run of a few milliseconds per case: its ratios are noise, and a
        # "met" or "missed" drawn from them would read as a finding.
        L.append("Not judged: quick runs only check that the benchmark works (tiny sizes, one repetition). "
                 "Judge the targets from a `--full` run.")
    else:
        L.extend(targets(cs, byname, workloads, macro, micro, seal))
    L.append("")
    return "\n".join(L)


def targets(cs, byname, workloads, macro, micro, seal):
    out = []

    def verdict(ok):
        return "met" if ok else "**missed**"

    ratio = report_common.shown_ratio

    small = [r for r in ("batch_16B", "batch_64B", "batch_256B", "batch_mixed_16-512B")]
    dm = [(r, med(micro.get((r, "dropalloc-pmr"), [])), med(micro.get((r, "mimalloc"), [])),
           med(micro.get((r, "sync_pool"), []))) for r in small]
    dm = [x for x in dm if x[1] and x[2] and x[3]]
    if dm:
        g_mi = geomean([d / mi for _, d, mi, _ in dm])
        g_sp = geomean([sp / d for _, d, _, sp in dm])
        out.append("- dropalloc-pmr on small batches (%s): %s mimalloc (target ≤ 1.0×: %s); "
                   "%.1f× faster than sync_pool (target ≥ 4×: %s)." % (
                       ", ".join(r for r, *_ in dm), ratio(g_mi, 1.0), verdict(g_mi <= 1.0), g_sp,
                       verdict(g_sp >= 4.0)))
    else:
        out.append("- dropalloc-pmr on small batches: not measured.")

    dmc = byname["dropalloc-malloc"]
    if dmc.unavailable:
        out.append("- LD_PRELOAD LIFO fast path ≤ 1.0× glibc and mimalloc: not measured, dropalloc-malloc not "
                   "available (%s)." % dmc.unavailable)
    else:
        for ref in ("glibc", "mimalloc"):
            lifo = [r for r in ("lifo_16B", "lifo_64B", "lifo_256B", "lifo_1024B")
                    if micro.get((r, "dropalloc-malloc")) and micro.get((r, ref))]
            if lifo:
                g = geomean([med(micro[(r, "dropalloc-malloc")]) / med(micro[(r, ref)]) for r in lifo])
                out.append("- LD_PRELOAD LIFO fast path (%s): %s %s (target ≤ 1.0×: %s)." % (
                    ", ".join(lifo), ratio(g, 1.0), ref, verdict(g <= 1.0)))
            else:
                out.append("- LD_PRELOAD LIFO fast path against %s: not measured." % ref)

    if dmc.unavailable:
        out.append("- Macro workloads: not measured, dropalloc-malloc not available.")
    else:
        def macro_ratio(w, name, field):
            # dropalloc-malloc's median over name's, or None when either did not run.
            d, o = macro.get((w, "dropalloc-malloc")), macro.get((w, name))
            return med([float(r[field]) for r in d]) / med([float(r[field]) for r in o]) if d and o else None

        each = [(w, x) for w, x in ((w, macro_ratio(w, "mimalloc", "seconds")) for w in workloads) if x is not None]
        over = [(w, x) for w, x in each if x > 1.2]
        if each:
            out.append("- Each macro workload's time ≤ 1.2× mimalloc: %d of %d within%s (target: %s)." % (
                len(each) - len(over), len(each),
                "; over: " + ", ".join("%s %.2f×" % o for o in sorted(over, key=lambda o: -o[1])) if over else "",
                verdict(not over)))
        else:
            out.append("- Each macro workload's time ≤ 1.2× mimalloc: not measured.")
        for label, field, limit in (("time", "seconds", 0.95), ("peak RSS", "hwm_kib", 1.00)):
            def gm(name):
                return geomean([x for x in (macro_ratio(w, name, field) for w in workloads) if x is not None])
            best = [(n, gm(n)) for n in ("jemalloc", "mimalloc") if gm(n)]
            if not best:
                out.append("- Macro %s: not measured." % label)
                continue
            # "The best of jemalloc and mimalloc": the one dropalloc compares worst against.
            name, g = max(best, key=lambda x: x[1])
            out.append("- Macro geometric mean %s: %s %s, the better of jemalloc and mimalloc here "
                       "(%s) (target ≤ %.2f×: %s)." % (
                           label, ratio(g, limit), name, ", ".join("%.2f× %s" % (v, n) for n, v in best), limit,
                           verdict(g <= limit)))

    # The drop check and sealing, in the seal/check micro-benchmark (hot:
    # the metadata of the 16 blocks checked in turn stays in cache).
    def seal_ns(row, per_page=False):
        vs = seal.get(row)
        return med([v[1] if per_page else v[0] for v in vs]) if vs else None
    one = [x for x in (seal_ns("check_hot/64B"), seal_ns("check_hot/4096B")) if x]
    if one:
        worst = max(one)
        out.append("- check() of an intact one-page block, metadata in cache (check_hot/64B, /4096B): "
                   "%.1f ns (target ≤ 3 ns: %s)." % (worst, verdict(worst <= 3.0)))
    else:
        out.append("- check() and seal targets: not measured (no seal/check micro-benchmark results).")
    first = seal_ns("check_hot/4096B")
    further = []
    for row, pages in (("check_hot/65536B", 16), ("check_hot/262144B", 64)):
        x = seal_ns(row)
        if x and first:
            further.append((x - first) / (pages - 1))
    if further:
        worst = max(further)
        out.append("- check(), each further page (check_hot/65536B and /262144B over /4096B): "
                   "%.2f ns (target ≤ 1 ns: %s)." % (worst, verdict(worst <= 1.0)))
    # A block under a page counts as a page in this benchmark: per 64-byte
    # value, not per page of them.
    for row in ("seal_all/64B", "seal_many/64B"):
        x = seal_ns(row, per_page=True)
        if x:
            line = ("- Sealing many small values (%s): %.0f ns a value, each 64-byte value counted as a "
                    "page (target ≤ 100 ns per page: %s)" % (row, x, verdict(x <= 100.0)))
            # seal_many's rows include the benchmark's first write to each
            # page after its advice; say how much of the figure that is.
            touch = seal_ns("first_write/64B", per_page=True)
            if row == "seal_many/64B" and touch:
                line += "; %.0f ns of it is the first write to the page after its advice (first_write/64B)" % touch
                plain = seal_ns("rewrite/64B", per_page=True)
                if plain:
                    line += ", against %.1f ns for the same write to a page not advised (rewrite/64B)" % plain
            out.append(line + ".")
    return out


# --- plot --------------------------------------------------------------------------

def plot(path_base, cs, workloads, macro, micro, m, reps):
    gp = shutil.which("gnuplot")
    if not gp:
        return "gnuplot not installed: no plot"
    macro_cs = [c for c in cs if c.malloc_level and not c.unavailable]
    all_cs = [c for c in cs if not c.unavailable]
    dat = path_base + ".dat.tmp"

    def block(rows, names, get):
        # Per contender three columns: the median, the fastest and the slowest
        # run, each divided by mimalloc's median, for the error bars.
        lines = ["row " + " ".join("%s %s_min %s_max" % (n, n, n) for n in names)]
        for r in rows:
            ref = med(get(r, "mimalloc"))
            vals = []
            for n in names:
                xs = get(r, n)
                vals += (["%.4f" % (v / ref) for v in (med(xs), min(xs), max(xs))] if xs and ref
                         else ["NaN"] * 3)
            lines.append(r + " " + " ".join(vals))
        return "\n".join(lines)

    def mget(field):
        return lambda w, n: [float(r[field]) for r in macro.get((w, n), [])]

    micro_rows = []
    for (row, _c) in micro:
        if row not in micro_rows:
            micro_rows.append(row)
    with open(dat, "w") as f:
        f.write(block(workloads, [c.name for c in macro_cs], mget("seconds")) + "\n\n\n")
        f.write(block(workloads, [c.name for c in macro_cs], mget("hwm_kib")) + "\n\n\n")
        f.write(block(micro_rows, [c.name for c in all_cs], lambda r, n: micro.get((r, n), [])) + "\n")
    spread = ("bars: median, whiskers: fastest to slowest of %d runs" % reps if reps > 1
              else "one run each: no spread")
    # noenhanced: names such as cache_scratch are printed as written, not
    # with "_s" taken for a subscript.
    script = """
set terminal svg size 1200,1550 dynamic noenhanced font "sans,11"
set output '{out}'
set datafile missing 'NaN'
set style data histograms
set style histogram errorbars gap 1 lw 1
set style fill solid 0.85 border -1
set logscale y 2
set grid ytics
set key outside right top
set xtics rotate by -35
set ylabel 'ratio to mimalloc (log scale, lower is better)'
set multiplot layout 3,1 title {title}
set title 'Macro workloads: time, ratio to mimalloc'
plot for [i=0:{nm}] '{dat}' index 0 using 2+3*i:3+3*i:4+3*i:xtic(1) title columnheader(2+3*i)
set title 'Macro workloads: peak RSS, ratio to mimalloc'
plot for [i=0:{nm}] '{dat}' index 1 using 2+3*i:3+3*i:4+3*i:xtic(1) title columnheader(2+3*i)
set title 'Micro-benchmarks: ns per operation, ratio to mimalloc'
plot for [i=0:{na}] '{dat}' index 2 using 2+3*i:3+3*i:4+3*i:xtic(1) title columnheader(2+3*i)
unset multiplot
""".format(out=path_base + ".svg.tmp", dat=dat, nm=len(macro_cs) - 1, na=len(all_cs) - 1,
           title=report_common.gp_str("Allocator comparison, %s\n%s" % (spread, report_common.machine_label(m))))
    return report_common.run_gnuplot(gp, script, path_base + ".svg", dat)


# --- main ----------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="CI smoke: 1 rep, tiny sizes (default)")
    mode.add_argument("--full", action="store_true", help="5 reps, full sizes (the README table)")
    ap.add_argument("--reps", type=int, help="repetitions (default: quick 1, full 5)")
    ap.add_argument("--min-time", type=float, default=0.1, help="Google Benchmark min time (full mode)")
    ap.add_argument("--only", nargs="*", help="macro workloads to run (default: all)")
    ap.add_argument("--shim", help="use this libdropalloc.so instead of building %s" % SHIM_TARGET)
    ap.add_argument("--no-build-shim", action="store_true", help="do not run bazel to build the shim")
    ap.add_argument("--bin-dir", help="directory holding bench/macro_* etc. (default: runfiles)")
    ap.add_argument("--cpu", default="auto",
                    help="CPU for the single-threaded runs: a number, 'auto' (default: for each group of "
                         "runs, the fastest by bench/cpu_probe just before) or 'none' (no pinning)")
    report_common.add_output_args(ap, "compare")
    report_common.add_contender_arg(ap)
    args = ap.parse_args()
    args.quick = not args.full
    if args.reps is None:
        args.reps = 1 if args.quick else 5
    mode_name = "quick" if args.quick else "full"

    bindir = args.bin_dir
    if not bindir:
        for cand in ("bench", os.path.join(os.path.dirname(os.path.abspath(__file__)))):
            if os.path.isfile(os.path.join(cand, "alloc_micro")):
                bindir = cand
                break
    if not bindir or not os.path.isfile(os.path.join(bindir, "alloc_micro")):
        sys.exit("compare: cannot find the benchmark binaries; use `bazel run -c opt //bench:compare` "
                 "or --bin-dir=bazel-bin/bench")
    ws = os.environ.get("BUILD_WORKSPACE_DIRECTORY")
    out_dir = report_common.output_dir(args)

    command = ("bazel run -c opt //bench:compare -- " if ws else "python3 bench/compare.py ") + \
        " ".join(sys.argv[1:] or ["--quick"])
    m = machine()
    log("compare: %s mode, %d rep(s); %d CPUs, %s, kernel %s" % (mode_name, args.reps, m["nproc"], m["cpu"],
                                                                 platform.release()))
    try:
        # Quick mode (CI smoke) records slow CPUs but does not wait for them.
        args.pinning = cpu_pin.Pinning(args.cpu, bindir, max_wait=0 if args.quick else 60)
    except ValueError as e:
        sys.exit("compare: %s" % e)
    cs = make_contenders(args)
    for c in cs:
        log("compare: contender %-16s %s" % (c.name, ("not available: " + c.unavailable) if c.unavailable
                                              else (c.preload or "no preload")))
    workloads, macro, micro, seal = run_all(args, cs, bindir)
    real = realprog.run(args, cs, bindir, rotate, log)

    report = build_report(args, cs, m, workloads, macro, micro, seal, command, real)
    base = os.path.join(out_dir, "compare-" + mode_name)
    err = plot(base, cs, workloads, macro, micro, m, args.reps)
    report += "\n" + ("Plot: not drawn (%s).\n" % err if err else
                      "Plot: [compare-%s.svg](compare-%s.svg)\n" % (mode_name, mode_name))
    idle_err = realprog.plot_idle(base, real, report_common.machine_label(m))
    report += ("Idle plot: not drawn (%s).\n" % idle_err if idle_err else
               "Idle plot: [compare-%s-idle.svg](compare-%s-idle.svg)\n" % (mode_name, mode_name))
    report_common.write_atomically(base + ".md", report)
    raw = {"machine": m, "command": command, "reps": args.reps,
           "contenders": [{"name": c.name, "preload": c.preload, "unavailable": c.unavailable,
                           "rejected": c.rejected} for c in cs],
           "macro": {"%s|%s" % k: v for k, v in macro.items()},
           "micro": {"%s|%s" % k: v for k, v in micro.items()},
           "seal_check": seal,
           "pinning": args.pinning.to_json(),
           "real_programs": realprog.to_json(real)}
    report_common.write_atomically(base + ".json", json.dumps(raw, indent=1))
    print(report)
    log("compare: wrote %s.md, %s.json%s%s" % (base, base, "" if err else ", %s.svg" % base,
                                               "" if idle_err else ", %s-idle.svg" % base))
    log("compare: results are in %s%s" % (out_dir, "" if args.save else " (--save writes bench/results/)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
