#!/usr/bin/env bash
# CI smoke for bench/compare.py: the quick mode end to end (tiny sizes, one
# repetition). Checks that the report was written and that every contender was
# either measured or reported "not available" with a reason. No timing
# assertions: these are shared, noisy machines.
#
# Run as `bazel run` runs it (BUILD_WORKSPACE_DIRECTORY set) against a stand-in
# source tree, with the default output directory and a --contender whose
# library does not exist: the stand-in's bench/results must be left as it was,
# the files must land in $TMPDIR/dropalloc-bench, and the missing contender
# must be skipped with a message.
set -euo pipefail
tmp="${TEST_TMPDIR:-$(mktemp -d)}"
ws="$tmp/workspace"
mkdir -p "$ws/bench/results" "$tmp/tmpdir"
echo "committed report" >"$ws/bench/results/compare-quick.md"
before=$(cd "$ws" && find . -printf '%p %s %T@\n' | sort)
out="$tmp/tmpdir/dropalloc-bench"
# No bazel inside a test: the shim is used only if a built one is handed in.
BUILD_WORKSPACE_DIRECTORY="$ws" TMPDIR="$tmp/tmpdir" \
  python3 bench/compare.py --quick --bin-dir=bench --no-build-shim --contender x=/nonexistent.so \
  >"$tmp/stdout" 2>"$tmp/progress" || { echo "compare.py failed:"; cat "$tmp/progress"; exit 1; }
after=$(cd "$ws" && find . -printf '%p %s %T@\n' | sort)
if [[ "$before" != "$after" ]]; then
  echo "the source tree was written to without --save:"; diff <(echo "$before") <(echo "$after") || true; exit 1
fi
test ! -e bench/results || { echo "bench/results written in the current directory"; exit 1; }
grep -qF "results are in $out" "$tmp/progress" || { echo "no 'results are in $out' line:"; cat "$tmp/progress"; exit 1; }
grep -q "contender x skipped: /nonexistent.so is missing" "$tmp/progress" || {
  echo "the missing --contender was not reported as skipped:"; cat "$tmp/progress"; exit 1; }
md="$out/compare-quick.md"
test -s "$md" || { echo "missing $md"; exit 1; }
python3 - "$md" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
fail = []
if not re.search(r"^- x: \*\*not available: /nonexistent.so is missing\*\*", text, re.M):
    fail.append("--contender x=/nonexistent.so not reported as not available")
targets = text.split("## Targets", 1)[-1].split("\n## ", 1)[0]
if "Not judged" not in targets or re.search(r"\bmet\b|missed", targets):
    fail.append("quick mode judged targets: " + targets.strip()[:300])
for name in ("glibc", "jemalloc", "mimalloc", "dropalloc-malloc", "dropalloc-pmr", "sync_pool", "unsync_pool"):
    m = re.search(r"^- %s: (.*)$" % re.escape(name), text, re.M)
    if not m:
        fail.append("no contender line for " + name)
    elif "rejected" in m.group(1):
        fail.append("%s had rejected runs: %s" % (name, m.group(1)))
# Single-threaded runs pinned to one CPU (bench/cpu_pin.py), or said not to be.
cpus = re.search(r"^CPUs: (.*)$", text, re.M)
if not cpus:
    fail.append("no CPUs line")
elif "no pinning" not in cpus.group(1) and not re.search(
        r"chosen by probe of \d+ groups \(CPU \d+ for \d+.*\); probes .* [0-9.]+-[0-9.]+ ms on the CPU chosen",
        cpus.group(1)):
    fail.append("CPUs line names no pinned CPU with its probe times: " + cpus.group(1))
elif "no pinning" not in cpus.group(1) and not re.search(r"^Threaded workloads: \d+ of \d+ threaded groups started",
                                                         text, re.M):
    fail.append("no line on how the threaded groups started")
# The micro rows are measured in two runs (pinned, threaded): both kinds present.
for row in ("lifo_16B", "prodcons_64B"):
    if not re.search(r"^\| %s \|" % row, text, re.M):
        fail.append("no micro row " + row)
HEADS = ("| workload", "| benchmark", "| program", "| contender")
def table(title):
    if title not in text:
        return [], []
    sec = text.split(title, 1)[1].split("\n## ", 1)[0]
    rows = [l for l in sec.splitlines() if l.startswith("| ") and not l.startswith(HEADS)]
    header = [l for l in sec.splitlines() if l.startswith(HEADS)][0]
    return [h.strip() for h in header.strip("|").split("|")], [[c.strip() for c in r.strip("|").split("|")] for r in rows]
def contender_unavailable(name):
    return re.search(r"^- %s: \*\*not available: .+\*\*" % re.escape(name), text, re.M)
for title in ("## Macro workloads: time", "## Macro workloads: peak RSS", "## Micro-benchmarks",
              "## Real programs: time", "## Real programs: peak RSS"):
    cols, rows = table(title)
    if not rows:
        fail.append(title + ": no rows")
    for i, col in enumerate(cols[1:], 1):
        if col.startswith("best of"):
            continue
        for r in rows:
            if "geometric" in r[0] or r[0].startswith("prodcons"):
                continue
            # A real program may be missing here (no sqlite3): then it says why.
            why = re.search(r"^- %s under %s: \*\*not available: .+\*\*" % (re.escape(r[0]), re.escape(col)),
                            text, re.M)
            if contender_unavailable(col) or why:
                if r[i] != "n/a": fail.append("%s: %s/%s not available but has numbers" % (title, r[0], col))
            elif not re.match(r"^[0-9.]+", r[i]):
                fail.append("%s: %s/%s is unmeasured: %s" % (title, r[0], col, r[i]))
cols, rows = table("## Allocate, touch, free, idle")
if not rows:
    fail.append("idle table missing")
for r in rows:
    if contender_unavailable(r[0]):
        if "not available" not in r[-1]: fail.append("idle: %s not available but measured" % r[0])
    elif not all(re.match(r"^[0-9.]+$", c) for c in r[1:5]):
        fail.append("idle: %s is unmeasured: %s" % (r[0], r))
if "## Drop check and seal costs" not in text or "| seal/4096B |" not in text or "| check/65536B |" not in text \
        or "| first_write/4096B |" not in text:
    fail.append("seal/check table missing")
if "Machine: " not in text or "kernel " not in text:
    fail.append("machine line missing")
if fail:
    print("\n".join(fail)); print(text); sys.exit(1)
print("smoke ok")
PY
