"""Real programs and the allocate-touch-free-idle trace, for compare.py.

Real programs: sqlite3, perl and python3 from the system and bench/macro/
containers.cc (plain C++), each run whole under every malloc-level contender
(the same LD_PRELOADs as the macro workloads), alternated like them. Measured
from outside: the wall time and the peak resident set (ru_maxrss) of the whole
process, start-up, loading and exit included.

  sqlite3  /usr/bin/sqlite3 on :memory:: a 300k-row table filled by a recursive
           CTE, two indexes, a GROUP BY on an indexed column and one that sorts
  perl     a hash of 400k keys, a third of them deleted, the keys sorted
  python3  /usr/bin/python3 if present, else the one on PATH (the report says
           which): a dict of 100k small dicts through json.dumps and json.loads,
           400k strings sorted. CPython serves objects up to 512 B from its
           own pools (pymalloc, on mmap), so malloc sees only the larger ones.
  containers  bench/macro/containers.cc: std::map, std::unordered_map,
           std::vector<std::string> and std::list churn

--quick runs tiny sizes once; --full the sizes above, --reps times.

How the numbers are kept honest:
  - ru_maxrss: a child forked from this Python process is charged for this
    process's pages at the fork (with fork and with vfork alike; going through
    /usr/bin/env does not help, exec keeps the count). So every program is
    started by bench/measure_exec, a small C program that forks, execs and
    reports wait4's rusage and the wall time; the preload is set for the
    program only. Each run first measures /bin/true both ways and reports
    both: through measure_exec it must stay under TRUE_LIMIT_KIB, or the real
    programs are not measured.
  - the preload: before the timed runs, each program runs once per contender
    with tiny input and LD_DEBUG=bindings (written to files, not mixed with
    its output); every binding of `malloc` to an allocator library must go
    to the contender's. Bindings to an executable are its canonical PLT
    address for malloc (python3 is not position-independent) and are not
    where malloc is. A program that fails this check is "not available" for
    that contender, with the bindings seen. containers also reports its
    malloc on every run (workload.h), and runs that disagree are rejected.
  - every contender must print the same output as the first run of that
    program (sums and counts over the work), or the run is rejected.

Allocate-touch-free-idle (bench/macro/idle_rss.c): 4 x 16 MiB written and
freed, 256 MiB of 256-byte blocks written and freed, 3 s idle, then
malloc_trim(0) and 1 s more, VmRSS sampled by the program itself. One run
per contender and repetition, with the trim: the end-of-idle value comes
before the trim is called, so it is the value without malloc_trim. Reported:
the resident set after the frees, at the end of the idle, 1 s after the trim,
which library the malloc_trim call went to; a plot of the samples (first
repetition) if gnuplot is installed.
"""

import math
import os
import re
import shutil
import signal
import statistics
import subprocess
import tempfile
import time

import cpu_pin
import report_common

# /bin/true measured through measure_exec must peak below this.
TRUE_LIMIT_KIB = 8 * 1024

ALLOCATOR_LIBS = (("libdropalloc", "dropalloc"), ("libjemalloc", "jemalloc"), ("libmimalloc", "mimalloc"),
                  ("libtcmalloc", "tcmalloc"), ("libc.so", "glibc"))
REFERENCES = ("glibc", "jemalloc", "mimalloc")
MALLOC_BINDING = re.compile(r"binding file (\S+) \[\d+\] to (\S+) \[\d+\]: normal symbol `malloc'")


def allocator_name(path, c=None):
    """glibc, jemalloc, mimalloc, tcmalloc, dropalloc, the name of contender c
    if path is its preload (a --contender library has no name here), or None
    for any other file."""
    if c is not None and c.preload and path and report_common.same_library(path, c.preload):
        return c.alloc
    base = os.path.basename(path or "")
    for prefix, name in ALLOCATOR_LIBS:
        if base.startswith(prefix):
            return name
    return None


# --- the programs ------------------------------------------------------------------

def sqlite_sql(rows):
    return ("CREATE TABLE t(id INTEGER PRIMARY KEY, grp INTEGER, name TEXT, val REAL);"
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < %d) "
            "INSERT INTO t SELECT x, (x * 7919) %% 1009, printf('name-%%08d-%%s', x, hex(x * x)), x * 0.5 FROM c;"
            "CREATE INDEX t_grp ON t(grp, val);"
            "CREATE INDEX t_name ON t(name);"
            "SELECT count(*), sum(n), sum(total), max(longest) FROM (SELECT grp, count(*) AS n, sum(val) AS total,"
            " max(length(name)) AS longest FROM t GROUP BY grp);"
            "SELECT count(*), max(n) FROM (SELECT substr(name, -6) AS tail, count(*) AS n FROM t GROUP BY tail);"
            % rows)


PERL = r"""
my $n = %d;
my %%h;
for my $i (0 .. $n - 1) {
  $h{sprintf("key-%%07d-%%x", $i, ($i * 2654435761) %% 4294967296)} = "v" x (1 + $i %% 60);
}
my $deleted = 0;
for my $k (keys %%h) {
  if (length($h{$k}) %% 3 == 0) { delete $h{$k}; $deleted++; }
}
my @sorted = sort keys %%h;
my $bytes = 0;
$bytes += length($h{$_}) for @sorted;
print scalar(@sorted), " $deleted $bytes $sorted[0] $sorted[-1]\n";
"""

PYTHON = r"""
import json
n = %d
d = {"k%%d" %% i: {"id": i, "name": "item-%%d" %% i, "tags": ["t%%d" %% (i %% 7), "u%%d" %% (i %% 11)],
                  "score": i * 0.25} for i in range(n // 4)}
text = json.dumps(d)
back = json.loads(text)
for k in list(back)[::3]:
    del back[k]
strs = ["%%08x-%%d" %% ((i * 2654435761) & 0xffffffff, i) for i in range(n)]
strs.sort()
print(len(text), len(back), sum(len(v["tags"]) for v in back.values()), strs[0], strs[-1])
"""


class Program:
    def __init__(self, name, about, exe, argv, version=None, settings=(), output_key=None, label=None):
        self.name = name
        self.about = about          # quick (bool) -> what it does
        self.exe = exe              # the executable (None: not found)
        self.argv = argv            # quick (bool) -> argv
        self.settings = list(settings)   # NAME=VALUE for the program's environment
        self.output_key = output_key or (lambda out: out.strip())
        self.unavailable = None if exe and os.access(exe, os.X_OK) else "%s not found" % (exe or name)
        self.version = version_of(version) if version and not self.unavailable else None
        # What the report calls it.
        self.label = label or "%s%s" % (exe or name, " " + self.version if self.version else "")


def version_of(argv):
    try:
        r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return r.stdout.strip().split()[0] if r.returncode == 0 and r.stdout.strip() else "?"


def system_program(name):
    """/usr/bin/<name> if present, else the one on PATH (None: neither)."""
    path = "/usr/bin/" + name
    return path if os.access(path, os.X_OK) else shutil.which(name)


def containers_key(out):
    """The work's checksum from the RESULT line (seconds and memory vary)."""
    for line in out.splitlines():
        if line.startswith("RESULT "):
            f = dict(kv.split("=", 1) for kv in line.split()[1:] if "=" in kv)
            return "ops=%s check=%s" % (f.get("ops"), f.get("check"))
    return None


def programs(bindir):
    sqlite3, perl, py = system_program("sqlite3"), system_program("perl"), system_program("python3")
    containers = os.path.join(bindir, "macro_containers")
    return [
        Program("sqlite3", lambda q: "`:memory:`, %s-row table from a recursive CTE, two indexes, two GROUP BYs"
                % ("3k" if q else "300k"),
                sqlite3, lambda q: [sqlite3, "-batch", ":memory:", sqlite_sql(3000 if q else 300000)],
                version=[sqlite3, "--version"]),
        # Fixed hash seeds, so every contender builds the same hashes.
        Program("perl", lambda q: "hash of %s keys, a third deleted, keys sorted" % ("4k" if q else "400k"),
                perl, lambda q: [perl, "-e", PERL % (4000 if q else 400000)],
                version=[perl, "-e", "print substr($^V, 1)"], settings=["PERL_HASH_SEED=1", "PERL_PERTURB_KEYS=0"]),
        Program("python3", lambda q: "dict of %s dicts through json.dumps/loads, %s strings sorted (pymalloc "
                "serves objects up to 512 B itself)" % (("1k", "4k") if q else ("100k", "400k")),
                py, lambda q: [py, "-s", "-c", PYTHON % (4000 if q else 400000)],
                version=[py, "-c", "import sys; print(sys.version.split()[0])"], settings=["PYTHONHASHSEED=0"]),
        Program("containers", lambda q: "std::map, std::unordered_map, std::vector<std::string>, std::list churn",
                containers, lambda q: [containers] + (["--quick"] if q else []), output_key=containers_key,
                label="bench/macro/containers.cc"),
    ]


# --- running one process ----------------------------------------------------------

class Spawn:
    """One program started through measure_exec."""

    def __init__(self, rc, out, err, measured):
        self.rc = rc                # measure_exec's exit status (-9: timed out)
        self.out = out
        self.err = err
        self.m = measured           # status, wall_s, maxrss_kib, utime_s, stime_s (or {})

    @property
    def ok(self):
        return self.rc == 0 and self.m.get("status") == 0


def contender_settings(c):
    return ["LD_PRELOAD=" + c.preload] if c.preload else []


def spawn(bindir, argv, settings, timeout, tmp, cpu=None):
    """Runs argv through measure_exec with NAME=VALUE settings in its
    environment, pinned to cpu unless None (the program inherits it)."""
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD" and not k.startswith("PYTHON")}
    fd, result = tempfile.mkstemp(dir=tmp, suffix=".rusage")
    os.close(fd)
    cmd = [os.path.join(bindir, "measure_exec"), result] + list(settings) + ["--"] + list(argv)
    with tempfile.TemporaryFile(dir=tmp) as out, tempfile.TemporaryFile(dir=tmp) as err:
        # Its own process group, so a timeout ends the program too, not only measure_exec.
        p = subprocess.Popen(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env,
                             start_new_session=True, preexec_fn=cpu_pin.pin_to(cpu))
        try:
            rc = p.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
            os.unlink(result)
            return Spawn(-9, "", "timed out after %d s" % timeout, {})
        out.seek(0)
        err.seek(0)
        o, e = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    with open(result) as f:
        text = f.read()
    os.unlink(result)
    m = {}
    for kv in text.split():
        k, _, v = kv.partition("=")
        m[k] = int(v) if k in ("status", "maxrss_kib") else float(v)
    return Spawn(rc, o, e, m)


def failure(s):
    if s.rc == -9:
        return s.err
    return "exit %s: %s" % (s.m.get("status", s.rc), (s.err.strip() or s.out.strip())[-200:])


def malloc_providers(bindir, argv, settings, timeout, tmp, c):
    """Runs argv once with LD_DEBUG=bindings under contender c; returns (Spawn,
    {allocator: n bindings}, {file: n})."""
    ld = tempfile.mkdtemp(dir=tmp)
    s = spawn(bindir, argv, list(settings) + ["LD_DEBUG=bindings", "LD_DEBUG_OUTPUT=" + os.path.join(ld, "ld")],
              timeout, tmp)
    providers, others = {}, {}
    for name in os.listdir(ld):
        with open(os.path.join(ld, name), errors="replace") as f:
            for line in f:
                m = MALLOC_BINDING.search(line)
                if m:
                    a = allocator_name(m.group(2), c)
                    if a:
                        providers[a] = providers.get(a, 0) + 1
                    else:
                        others[m.group(2)] = others.get(m.group(2), 0) + 1
        os.unlink(os.path.join(ld, name))
    os.rmdir(ld)
    return s, providers, others


# --- the runs ----------------------------------------------------------------------

class Results:
    def __init__(self, quick):
        self.quick = quick
        self.programs = []
        self.contenders = []        # malloc-level contenders, in report order
        self.unavailable = {}       # (program, contender) -> reason
        self.preload_check = {}     # (program, contender) -> what the bindings showed
        self.runs = {}              # (program, contender) -> [measured dicts]
        self.true_check = {}        # how /bin/true measures, see check_true
        self.idle = {}              # contender -> [idle run dicts]
        self.idle_unavailable = {}  # contender -> reason


def check_true(bindir, res, tmp, log):
    """Measures /bin/true's ru_maxrss spawned from here (the trap) and through
    measure_exec under each contender. Without a preload it must stay under
    TRUE_LIMIT_KIB, or no real program is measured; what a preload adds is that
    allocator's own start-up."""
    true = "/bin/true" if os.access("/bin/true", os.X_OK) else shutil.which("true")
    proc = subprocess.Popen([true])
    _, _, ru = os.wait4(proc.pid, 0)
    proc.returncode = 0  # reaped by wait4
    with open("/proc/self/status") as f:
        own = [ln for ln in f if ln.startswith("VmRSS:")]
    res.true_check = {"true": true, "direct_kib": ru.ru_maxrss,
                      "runner_rss_kib": int(own[0].split()[1]) if own else None, "via_measure_exec_kib": {}}
    for c in res.contenders:
        if c.unavailable:
            continue
        s = spawn(bindir, [true], contender_settings(c), 30, tmp)
        why = None if s.ok else "measure_exec could not run %s: %s" % (true, failure(s))
        if s.ok:
            res.true_check["via_measure_exec_kib"][c.name] = s.m["maxrss_kib"]
            if not c.preload and s.m["maxrss_kib"] > TRUE_LIMIT_KIB:
                why = ("%s started through measure_exec peaks at %d KiB (limit %d): peak RSS would include the "
                       "spawner's pages" % (true, s.m["maxrss_kib"], TRUE_LIMIT_KIB))
                log("compare: real programs not measured: " + why)
                for p in res.programs:
                    for other in res.contenders:
                        res.unavailable.setdefault((p.name, other.name), why)
                return
        if why:
            log("compare: real programs under %s not measured: %s" % (c.name, why))
            for p in res.programs:
                res.unavailable.setdefault((p.name, c.name), why)
    via = res.true_check["via_measure_exec_kib"]
    log("compare: /bin/true peak RSS %d KiB spawned from here, %s through measure_exec" % (
        res.true_check["direct_kib"], ", ".join("%s %d KiB" % kv for kv in via.items())))


def check_preloads(bindir, res, timeout, tmp, log):
    """Each program once per contender, tiny input, LD_DEBUG=bindings."""
    for p in res.programs:
        for c in res.contenders:
            if (p.name, c.name) in res.unavailable:
                continue
            if p.unavailable:
                res.unavailable[(p.name, c.name)] = p.unavailable
                continue
            s, providers, others = malloc_providers(bindir, p.argv(True), p.settings + contender_settings(c),
                                                    timeout, tmp, c)
            seen = ", ".join("%s (%d)" % kv for kv in sorted(providers.items())) or "none"
            res.preload_check[(p.name, c.name)] = "malloc bound to " + seen + (
                "; to executables' PLT: %s" % ", ".join(sorted(others)) if others else "")
            if not s.ok:
                res.unavailable[(p.name, c.name)] = "the LD_DEBUG check run failed: " + failure(s)
            elif set(providers) != {c.alloc}:
                res.unavailable[(p.name, c.name)] = "preload did not take: malloc bound to %s, expected %s" % (
                    seen, c.alloc)
            if (p.name, c.name) in res.unavailable:
                log("compare: real program %s under %s not available: %s" % (
                    p.name, c.name, res.unavailable[(p.name, c.name)]))


def run_programs(args, bindir, res, order, timeout, tmp, log):
    reference = {}   # program -> output key of its first good run
    todo = [(p, c) for p in res.programs for c in res.contenders if (p.name, c.name) not in res.unavailable]
    total, done = args.reps * len(todo), 0
    # Every program here runs one thread: pinned as compare.py's single-threaded workloads.
    pinning = getattr(args, "pinning", None)
    for rep in range(args.reps):
        for p in res.programs:
            cpu = pinning.for_group("rep %d %s" % (rep + 1, p.name)) if pinning else None
            for c in order(res.contenders, rep):
                if (p.name, c.name) in res.unavailable:
                    continue
                s = spawn(bindir, p.argv(args.quick), p.settings + contender_settings(c), timeout, tmp, cpu)
                done += 1
                why = None if s.ok else failure(s)
                key = p.output_key(s.out) if s.ok else None
                if not why and key is None:
                    why = "no result in the output: " + s.out.strip()[-200:]
                # A program that says which malloc it has (workload.h's RESULT line) must have the contender's.
                said = re.search(r"^RESULT .*\balloc=(\S+) malloc_from=(\S+)", s.out, re.M)
                if not why and said and not c.owns(said.group(1), said.group(2)):
                    why = "malloc is %s, not %s: %s" % (said.group(1), c.alloc, s.out.strip()[-200:])
                if not why and reference.setdefault(p.name, key) != key:
                    why = "output %r differs from the first run's %r" % (key[:120], reference[p.name][:120])
                if why:
                    c.rejected.append("real program %s: %s" % (p.name, why))
                    log("[real %d/%d] rep %d/%d %-10s %-16s REJECTED: %s" % (
                        done, total, rep + 1, args.reps, p.name, c.name, why))
                    continue
                res.runs.setdefault((p.name, c.name), []).append(s.m)
                log("[real %d/%d] rep %d/%d %-10s %-16s %8.3f s  peak %8.1f MiB" % (
                    done, total, rep + 1, args.reps, p.name, c.name, s.m["wall_s"], s.m["maxrss_kib"] / 1024))


def parse_idle(out):
    samples, result = [], None
    for line in out.splitlines():
        f = dict(kv.split("=", 1) for kv in line.split()[1:] if "=" in kv)
        if line.startswith("SAMPLE "):
            samples.append((float(f["t"]), int(f["rss_kib"]), f["phase"]))
        elif line.startswith("RESULT "):
            result = f
    return samples, result


def run_idle(args, bindir, res, order, timeout, tmp, log):
    exe = os.path.join(bindir, "macro_idle_rss")
    argv = [exe, "--trim"] + (["--quick"] if args.quick else [])
    for rep in range(args.reps):
        for c in order(res.contenders, rep):
            if c.name in res.idle_unavailable:
                continue
            s = spawn(bindir, argv, contender_settings(c), timeout, tmp)
            samples, r = parse_idle(s.out) if s.ok else ([], None)
            why = failure(s) if not s.ok else None if r else "no RESULT line: " + s.out.strip()[-200:]
            if not why and allocator_name(r["malloc_from"], c) != c.alloc:
                why = "malloc from %s, expected %s" % (r["malloc_from"], c.alloc)
            if why:
                c.rejected.append("idle_rss: " + why)
                log("[idle] rep %d/%d %-16s REJECTED: %s" % (rep + 1, args.reps, c.name, why))
                continue
            run = {k: int(r[k]) for k in ("freed_kib", "idle_end_kib", "trimmed_kib", "hwm_kib")}
            run.update(trim_from=r["trim_from"], maxrss_kib=s.m["maxrss_kib"], samples=samples)
            res.idle.setdefault(c.name, []).append(run)
            log("[idle] rep %d/%d %-16s after frees %7.1f MiB, end of idle %7.1f MiB, after trim %7.1f MiB" % (
                rep + 1, args.reps, c.name, run["freed_kib"] / 1024, run["idle_end_kib"] / 1024,
                run["trimmed_kib"] / 1024))


def run(args, cs, bindir, order, log):
    """Runs the real programs and the idle trace under the available malloc-level
    contenders; order(contenders, rep) gives the alternation. Returns Results."""
    res = Results(args.quick)
    res.programs = programs(bindir)
    res.contenders = [c for c in cs if c.malloc_level]
    for c in res.contenders:
        if c.unavailable:
            for p in res.programs:
                res.unavailable[(p.name, c.name)] = c.unavailable
            res.idle_unavailable[c.name] = c.unavailable
    timeout = 120 if args.quick else 900
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="compare-real-") as tmp:
        check_true(bindir, res, tmp, log)
        check_preloads(bindir, res, timeout, tmp, log)
        run_programs(args, bindir, res, order, timeout, tmp, log)
        run_idle(args, bindir, res, order, timeout, tmp, log)
    log("compare: real programs and idle trace took %.1f s" % (time.monotonic() - t0))
    return res


# --- reporting -----------------------------------------------------------------------

def median(xs):
    return statistics.median(xs) if xs else None


def program_target(res, ratios, label, limit):
    """The target line: dropalloc's malloc takes at most `limit` times the
    best of the references' `label` (time, peak RSS) on every program."""
    if "dropalloc-malloc" not in ratios or not ratios["dropalloc-malloc"]:
        return ["- %s of dropalloc-malloc ≤ %.2f× the best on each program: not measured." % (label, limit), ""]
    if res.quick:
        return ["- %s target (≤ %.2f× the best on each program): not judged in quick mode." % (label, limit), ""]
    xs = ratios["dropalloc-malloc"]
    worst = max(xs)
    return ["- %s of dropalloc-malloc ≤ %.2f× the best on each program: worst %s (target: %s)." % (
        label, limit, report_common.shown_ratio(worst, limit), "met" if worst <= limit else "**missed**"), ""]


def report(res):
    """Markdown lines: the real-program tables and the idle table."""
    L = []
    cs = res.contenders
    refs = [c.name for c in cs if c.name in REFERENCES]
    for title, field, scale, ufmt in (("time in seconds (whole process, wall)", "wall_s", 1.0, "%.3f"),
                                      ("peak RSS in MiB (whole process, ru_maxrss)", "maxrss_kib", 1 / 1024, "%.1f")):
        L.append("## Real programs: %s" % title)
        L.append("")
        L.append("| program | " + " | ".join(c.name for c in cs) + " | best of %s |" % "/".join(REFERENCES))
        L.append("|---|" + "---:|" * len(cs) + "---|")
        ratios = {c.name: [] for c in cs}
        for p in res.programs:
            vals = {c.name: median([r[field] * scale for r in res.runs.get((p.name, c.name), [])]) for c in cs}
            measured = [(vals[n], n) for n in refs if vals[n]]
            ref, ref_name = min(measured) if measured else (None, None)
            cells = []
            for c in cs:
                v = vals[c.name]
                if (p.name, c.name) in res.unavailable:
                    cells.append("n/a")
                elif v is None:
                    cells.append("–")
                else:
                    cells.append(ufmt % v + (" (%.2f×)" % (v / ref) if ref else ""))
                    if ref:
                        ratios[c.name].append(v / ref)
            L.append("| %s | %s | %s |" % (p.name, " | ".join(cells), ref_name or "–"))
        gm = []
        for c in cs:
            xs = ratios[c.name]
            gm.append("n/a" if c.unavailable else "%.2f×" % math.exp(statistics.fmean(map(math.log, xs)))
                      if xs else "–")
        L.append("| **geometric mean of ratios** | %s | |" % " | ".join(gm))
        L.append("")
        if field == "maxrss_kib":
            L.extend(program_target(res, ratios, "Peak RSS", 1.10))
        else:
            L.extend(program_target(res, ratios, "Time", 1.00))
    L.append("Ratios are to the best of %s for that program (named in the last column); lower is better. "
             "%d repetition(s), medians." % (", ".join(REFERENCES), max(
                 [len(v) for v in res.runs.values()] or [0])))
    L.append("")
    for p in res.programs:
        L.append("- %s (%s): %s." % (p.name, p.label, p.about(res.quick)))
    L.append("")
    tc = res.true_check
    if tc.get("via_measure_exec_kib"):
        L.append("Peak RSS is the ru_maxrss of the program, started by `bench/measure_exec` (fork, exec, wait4) "
                 "so that it is not charged for the runner's pages: %s spawned straight from the runner "
                 "(%d KiB resident) measures %d KiB; through measure_exec %s." % (
                     tc["true"], tc["runner_rss_kib"] or 0, tc["direct_kib"], ", ".join(
                         "%d KiB under %s" % (v, k) for k, v in tc["via_measure_exec_kib"].items())))
        L.append("")
    checked = [(k, v) for k, v in res.preload_check.items() if k not in res.unavailable]
    if checked:
        L.append("Preload check (one `LD_DEBUG=bindings` run per program and contender, tiny input): every "
                 "binding of `malloc` to an allocator library went to the contender's in %d of %d runs." % (
                     len(checked), len(res.preload_check)))
        L.append("")
    gone = sorted((k, v) for k, v in res.unavailable.items()
                  if not any(c.name == k[1] and c.unavailable for c in cs))
    for (prog, cname), why in gone:
        L.append("- %s under %s: **not available: %s**" % (prog, cname, why))
    if gone:
        L.append("")

    L.append("## Allocate, touch, free, idle: resident set in MiB")
    L.append("")
    idle_s, trim_s = ("0.5", "0.3") if res.quick else ("3", "1")
    L.append("`bench/macro/idle_rss.c`: %s, written, freed; %s of 256-byte blocks, written, freed; "
             "%s s idle; malloc_trim(0); %s s more. VmRSS read by the program; medians." % (
                 "4 x 1 MiB" if res.quick else "4 x 16 MiB", "16 MiB" if res.quick else "256 MiB", idle_s, trim_s))
    L.append("")
    L.append("malloc_trim from: the library `dlsym(RTLD_DEFAULT, \"malloc_trim\")` found; glibc's trims "
             "only glibc's own heap, so it does nothing for a preloaded allocator that has none.")
    L.append("")
    L.append("| contender | after the frees | end of idle (no trim) | %s s after malloc_trim(0) | peak (VmHWM) "
             "| malloc_trim from |" % trim_s)
    L.append("|---|---:|---:|---:|---:|---|")
    for c in cs:
        rs = res.idle.get(c.name)
        if c.name in res.idle_unavailable or not rs:
            why = res.idle_unavailable.get(c.name, "no successful run")
            L.append("| %s | n/a | n/a | n/a | n/a | not available: %s |" % (c.name, why))
            continue
        vals = ["%.1f" % (median([r[k] for r in rs]) / 1024) for k in ("freed_kib", "idle_end_kib", "trimmed_kib",
                                                                        "hwm_kib")]
        trim_from = rs[0]["trim_from"]
        L.append("| %s | %s | %s (%s) |" % (c.name, " | ".join(vals), os.path.basename(trim_from),
                                            allocator_name(trim_from) or "?"))
    L.append("")
    return L


def plot_idle(path_base, res, machine_label):
    """Draws path_base + "-idle.svg" from the first repetition's samples; returns
    why not, or None. machine_label: the date and machine, for the title."""
    gp = shutil.which("gnuplot")
    if not gp:
        return "gnuplot not installed: no plot"
    traces = [(c.name, res.idle[c.name][0]["samples"]) for c in res.contenders if res.idle.get(c.name)]
    if not traces:
        return "no idle_rss runs"
    dat = path_base + "-idle.dat.tmp"
    with open(dat, "w") as f:
        for name, samples in traces:
            f.write("# %s\n" % name + "".join("%.3f %.2f\n" % (t, kib / 1024) for t, kib, _ in samples) + "\n\n")
    trimmed = [t for t, _, phase in traces[0][1] if phase == "trimmed"]
    script = """
set terminal svg size 1000,520 dynamic noenhanced font "sans,11"
set output '{out}'
set grid
set key outside right top
set xlabel 'seconds since start'
set ylabel 'VmRSS (MiB)'
set title {title}
{arrow}
plot {plots}
""".format(out=path_base + "-idle.svg.tmp",
           title=report_common.gp_str("Allocate, touch, free, idle, then malloc_trim(0): resident set over time "
                                      "(first run)\n" + machine_label),
           arrow=("set arrow from %.3f, graph 0 to %.3f, graph 1 nohead dashtype 2\n"
                  "set label 'malloc_trim(0)' at %.3f, graph 0.95 left offset 0.5,0" % (trimmed[0], trimmed[0],
                                                                                        trimmed[0])
                  if trimmed else ""),
           plots=", ".join("'%s' index %d using 1:2 with linespoints title '%s'" % (dat, i, name)
                           for i, (name, _) in enumerate(traces)))
    return report_common.run_gnuplot(gp, script, path_base + "-idle.svg", dat)


def to_json(res):
    return {
        "programs": [{"name": p.name, "exe": p.exe, "version": p.version, "unavailable": p.unavailable}
                     for p in res.programs],
        "true_check": res.true_check,
        "preload_check": {"%s|%s" % k: v for k, v in res.preload_check.items()},
        "unavailable": {"%s|%s" % k: v for k, v in res.unavailable.items()},
        "runs": {"%s|%s" % k: v for k, v in res.runs.items()},
        "idle": res.idle,
        "idle_unavailable": res.idle_unavailable,
    }
