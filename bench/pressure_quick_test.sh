#!/usr/bin/env bash
# CI: bench/pressure.py --quick end to end in a real child memory cgroup.
# Asserts correctness only (no timing, no hit rates: shared, noisy machines):
# the sealed dropalloc caches (with and without headroom) served 0 wrong
# values and nobody in their cgroups was OOM-killed. Skips (exit 0, saying why) only where no memory cgroup can
# be made, or the kernel has no MAP_DROPPABLE (unless the private fallback is
# forced with DROPALLOC_FORCE_FALLBACK=1: the _fallback target).
set -euo pipefail
out="${TEST_TMPDIR:-$(mktemp -d)}/results"
mkdir -p "$out"
probe_rc=0
python3 bench/pressure.py --probe 2>"$out.probe" || probe_rc=$?
if [ "$probe_rc" = 3 ]; then  # no memory cgroup can be made here
  echo "SKIPPED: $(cat "$out.probe")"
  exit 0
elif [ "$probe_rc" != 0 ]; then
  echo "pressure.py --probe failed (exit $probe_rc):"; cat "$out.probe"; exit 1
fi
python3 bench/pressure.py --quick --bin-dir=bench --out-dir="$out" >"$out.stdout" 2>"$out.progress" || {
  echo "pressure.py --quick failed:"; cat "$out.progress"; exit 1; }
cat "$out.progress"
python3 - "$out" <<'PY'
import json, os, sys
out = sys.argv[1]
raw = json.load(open(os.path.join(out, "pressure-quick.json")))
runs = raw["results"]["ramp"]
forced = os.environ.get("DROPALLOC_FORCE_FALLBACK") == "1"
fail = []
for name in ("dropalloc-sealed", "dropalloc-neighbour-uncapped"):
    r = runs.get(name)
    if r is None or "rejected" in r:
        print(name, "did not run:", r and r.get("rejected")); sys.exit(1)
    if forced and r["ready"].get("backing") == "droppable":
        print("the fallback was forced but %s ran on droppable memory" % name); sys.exit(1)
    if not forced and r["ready"].get("backing") != "droppable":
        print("SKIPPED: the kernel refused MAP_DROPPABLE (backing %s): nothing can be dropped" % r["ready"].get("backing"))
        sys.exit(0)
    if r["oom_kills"] != 0: fail.append("%d OOM kills in the %s cgroup" % (r["oom_kills"], name))
    died = [c["died"] for c in r["caches"] if c["died"]]
    if died or r["cotenant_died"]:
        fail.append("%s: cache %s, co-tenant %s" % (name, died, r["cotenant_died"]))
    if not r["cotenant_left"] or not r["cotenant_waves"]: fail.append("%s: the co-tenant never finished" % name)
    if r["cotenant_stall"] is None: fail.append("%s: no co-tenant stall line" % name)
    if not r["cgroup_removed"]: fail.append("%s: cgroup not removed" % name)
for name, v in runs.items():
    if "rejected" in v:
        fail.append("%s rejected: %s" % (name, v["rejected"]))
        continue
    wrong = sum(int(s["wrong"]) for c in v["caches"] for s in c["samples"])
    if wrong: fail.append("%s served %d wrong values" % (name, wrong))
md = open(os.path.join(out, "pressure-quick.md")).read()
for needle in ("| dropalloc-sealed |", "| dropalloc-neighbour-uncapped |", "Machine: ", "## Summary", "## Against the targets",
               "Not judged", "malloc_trim(0)"):
    if needle not in md: fail.append("report lacks " + repr(needle))
if "**met**" in md or "**missed**" in md: fail.append("quick mode judged targets")
if fail:
    print("\n".join(fail)); print(md); sys.exit(1)
print("pressure quick ok")
PY
