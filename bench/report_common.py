"""What the benchmark drivers (compare.py, pressure.py) share: the facts about
the machine a report states, where a run's files go, the extra malloc
contenders (--contender), and writing a result file so that a reader never
sees half of it."""
import datetime
import os
import platform
import re
import shutil
import subprocess
import sys

LIBDIR = "/usr/lib/x86_64-linux-gnu"
# malloc replacements preloaded by name; tcmalloc is optional (Debian
# libtcmalloc-minimal4), the others are build dependencies of this repository.
KNOWN_PRELOADS = {
    "jemalloc": (LIBDIR + "/libjemalloc.so.2", "libjemalloc2"),
    "mimalloc": (LIBDIR + "/libmimalloc.so.2", "libmimalloc2.0"),
    "tcmalloc": (LIBDIR + "/libtcmalloc_minimal.so.4", "libtcmalloc-minimal4"),
}
# Included without being asked for only where installed: a machine without it
# is not missing anything the reader expects.
OPTIONAL_PRELOADS = ("tcmalloc",)
CONTENDER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


def package_version(pkg):
    """The installed Debian version of pkg, or "?"."""
    if not shutil.which("dpkg-query"):
        return "?"
    r = subprocess.run(["dpkg-query", "-W", "-f=${Version}", pkg], text=True, stdout=subprocess.PIPE,
                       stderr=subprocess.DEVNULL)
    return r.stdout.strip() if r.returncode == 0 else "?"


def machine_facts(packages=("libjemalloc2", "libmimalloc2.0", "libtcmalloc-minimal4", "libc6", "g++")):
    """CPU, memory, kernel, load, the date and the versions of `packages`."""
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        with open("/proc/meminfo") as f:
            mem = "%.0f GiB" % (int(f.readline().split()[1]) / 1048576)
    except (OSError, ValueError, IndexError):
        mem = "?"
    u = platform.uname()
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "memory": mem,
        "uname": u,
        "load": " ".join("%.1f" % x for x in os.getloadavg()),
        "versions": {pkg: package_version(pkg) for pkg in packages},
    }


def shown_ratio(x, limit):
    """x as "1.23×" for a target line judging x <= limit: two decimals, or
    three where two would round a miss onto the limit ("1.00×", missed)."""
    return "%.3f×" % x if x > limit and round(x, 2) <= limit else "%.2f×" % x


def write_atomically(path, text):
    """Writes text to path through a temporary file renamed over it."""
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.replace(path + ".tmp", path)


def run_gnuplot(gp, script, svg, dat):
    """Runs gnuplot (the path gp) on script, which writes svg + ".tmp"; removes
    the data file dat and moves the plot into place. Returns why no plot was
    drawn, or None."""
    r = subprocess.run([gp], input=script, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    os.unlink(dat)
    if r.returncode != 0 or not os.path.isfile(svg + ".tmp"):
        return "gnuplot failed: " + r.stdout.strip()[-300:]
    os.replace(svg + ".tmp", svg)
    return None


def machine_label(facts):
    """One line naming the date and the machine, for plot titles: a plot copied
    out of its report still says where and when it was measured."""
    u = facts.get("uname")
    # The release only: the build string would crowd the title.
    kernel = "%s %s" % (u.release, u.machine) if u else " ".join(facts.get("kernel", "?").split()[:2])
    return "%s; %s CPUs, %s, %s RAM; kernel %s" % (
        facts["date"], facts["nproc"], facts["cpu"], facts.get("memory", facts.get("mem", "?")), kernel)


def gp_str(text):
    """text as a gnuplot double-quoted string, where a newline is "\\n"."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


# --- where the files go -----------------------------------------------------------

def add_output_args(ap, tool):
    """--out (alias --out-dir) and --save, the same for every driver."""
    ap.add_argument("--out", "--out-dir", dest="out", metavar="DIR",
                    help="write the %s-<mode>.* files here (default: $TMPDIR/dropalloc-bench, "
                         "or /tmp/dropalloc-bench)" % tool)
    ap.add_argument("--save", action="store_true",
                    help="write them to bench/results/ of the source tree instead: only for a run meant "
                         "to be committed")


def source_tree():
    """The workspace `bazel run` was started from, else the tree holding this file."""
    return os.environ.get("BUILD_WORKSPACE_DIRECTORY") or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def output_dir(args):
    """The directory a run writes to, created. The source tree only with --save,
    so a trial run never modifies or adds files that are under version control."""
    if args.save and args.out:
        sys.exit("--save writes to bench/results; give either --save or --out, not both")
    if args.save:
        d = os.path.join(source_tree(), "bench", "results")
    else:
        d = args.out or os.path.join(os.environ.get("TMPDIR") or "/tmp", "dropalloc-bench")
    os.makedirs(d, exist_ok=True)
    return os.path.abspath(d)


# --- contenders given on the command line --------------------------------------------

def add_contender_arg(ap):
    ap.add_argument("--contender", action="append", default=[], metavar="NAME=PATH",
                    help="also run under LD_PRELOAD=PATH, reported as NAME (repeatable); a bare NAME of "
                         "%s uses the Debian library, a bare PATH is named after the file. tcmalloc is "
                         "included by default where installed" % ", ".join(sorted(KNOWN_PRELOADS)))


def parse_contender(spec):
    """(name, path) from NAME=PATH, NAME (a known library) or PATH; exits on a
    spec that cannot be read, never on a library that is missing (that one is
    skipped when the contenders are made)."""
    if "=" in spec:
        name, path = spec.split("=", 1)
    elif spec in KNOWN_PRELOADS:
        name, path = spec, KNOWN_PRELOADS[spec][0]
    elif "/" in spec or spec.endswith(".so") or ".so." in spec:
        path = spec
        name = re.sub(r"\.so(\..*)?$", "", os.path.basename(spec))
        name = name[3:] if name.startswith("lib") and len(name) > 3 else name
    else:
        sys.exit("--contender %s: give NAME=PATH, a path, or one of %s" % (spec, ", ".join(sorted(KNOWN_PRELOADS))))
    if not CONTENDER_NAME.match(name) or not path:
        sys.exit("--contender %s: NAME must be letters, digits, _ . + - and PATH must not be empty" % spec)
    return name, path


def preload_contenders(specs, log, tool):
    """[(name, path, why_unavailable)]: jemalloc and mimalloc, tcmalloc where
    installed, then the --contender specs (one with a known name replaces it).
    A library that is missing is kept with the reason, and said once on stderr."""
    out = {name: path for name, (path, _) in KNOWN_PRELOADS.items()
           if name not in OPTIONAL_PRELOADS or os.path.isfile(path)}
    for name in OPTIONAL_PRELOADS:
        if name not in out:
            log("%s: %s not installed (%s, Debian package %s): not a contender" % (
                tool, name, KNOWN_PRELOADS[name][0], KNOWN_PRELOADS[name][1]))
    given = set()
    for spec in specs:
        name, path = parse_contender(spec)
        if name in given:
            sys.exit("--contender %s: %s given twice" % (spec, name))
        given.add(name)
        out[name] = path
    result = []
    for name, path in out.items():
        why = None
        if not os.path.isfile(path):
            pkg = KNOWN_PRELOADS.get(name, (None, None))[1] if name not in given else None
            why = "%s is missing%s" % (path, " (Debian package %s)" % pkg if pkg else "")
            log("%s: contender %s skipped: %s" % (tool, name, why))
        result.append((name, os.path.abspath(path), why))
    return result


def same_library(a, b):
    """Whether two paths name one file (a preload given through a symlink
    reports the path it was loaded by)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False
