#!/usr/bin/env bash
# CI smoke for bench/compare.py: the quick mode end to end (tiny sizes, one
# repetition). Checks that the report was written and that every contender was
# either measured or reported "not available" with a reason. No timing
# assertions: these are shared, noisy machines.
set -euo pipefail
out="${TEST_TMPDIR:-$(mktemp -d)}/results"
# No bazel inside a test: the shim is used only if a built one is handed in.
python3 bench/compare.py --quick --bin-dir=bench --out-dir="$out" --no-build-shim >"$out.stdout" 2>"$out.progress" || {
  echo "compare.py failed:"; cat "$out.progress"; exit 1; }
md="$out/compare-quick.md"
test -s "$md" || { echo "missing $md"; exit 1; }
python3 - "$md" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
fail = []
for name in ("glibc", "jemalloc", "mimalloc", "dropalloc-malloc", "dropalloc-pmr", "sync_pool", "unsync_pool"):
    m = re.search(r"^- %s: (.*)$" % re.escape(name), text, re.M)
    if not m:
        fail.append("no contender line for " + name)
    elif "rejected" in m.group(1):
        fail.append("%s had rejected runs: %s" % (name, m.group(1)))
def table(title):
    sec = text.split(title, 1)[1].split("\n## ", 1)[0]
    rows = [l for l in sec.splitlines() if l.startswith("| ") and not l.startswith("| workload") and not l.startswith("| benchmark")]
    header = [l for l in sec.splitlines() if l.startswith("| workload") or l.startswith("| benchmark")][0]
    return [h.strip() for h in header.strip("|").split("|")], [[c.strip() for c in r.strip("|").split("|")] for r in rows]
for title in ("## Macro workloads: time", "## Macro workloads: peak RSS", "## Micro-benchmarks"):
    cols, rows = table(title)
    if not rows:
        fail.append(title + ": no rows")
    for i, col in enumerate(cols[1:], 1):
        cells = [r[i] for r in rows if "geometric" not in r[0] and not r[0].startswith("prodcons")]
        unavailable = re.search(r"^- %s: \*\*not available: .+\*\*" % re.escape(col), text, re.M)
        if unavailable:
            if any(c != "n/a" for c in cells): fail.append("%s: %s not available but has numbers" % (title, col))
        elif any(not re.match(r"^[0-9.]+", c) for c in cells):
            fail.append("%s: %s has unmeasured cells: %s" % (title, col, cells))
if "## Drop check and seal costs" not in text or "| seal/4096B |" not in text or "| check/65536B |" not in text:
    fail.append("seal/check table missing")
if "Machine: " not in text or "kernel " not in text:
    fail.append("machine line missing")
if fail:
    print("\n".join(fail)); print(text); sys.exit(1)
print("smoke ok")
PY
