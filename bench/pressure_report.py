"""The pressure benchmark's analysis and report: per run summaries, the
tables (a summary ranking only runs without an OOM kill, one table per
scenario), the targets, and the plots (bench/pressure.py writes the runs)."""

import json
import math
import os
import shutil
import subprocess

import report_common
import pressure_contenders as pc

MIB = 1 << 20


def fmt(v, spec="%.1f", none="–"):
    return none if v is None else spec % v


# --- per run -------------------------------------------------------------------------

def presence(r, sc, seconds):
    """[(arrive, leave)] of the co-tenant as it reported them, planned times
    where it did not (it was killed)."""
    planned = sc.presence(seconds)
    waves, left = r.get("cotenant_waves", []), r.get("cotenant_left", [])
    return [(waves[i]["arrive"] if i < len(waves) else a, left[i] if i < len(left) else b)
            for i, (a, b) in enumerate(planned)]


def one_cache(c, spans, start, seconds):
    ss = c["samples"]
    out = {"ops": sum(int(s["ops"]) for s in ss), "hits": sum(int(s["hits"]) for s in ss)}
    out["served_s"] = ss[-1]["t"] if ss else 0

    def phase(sel):
        return [sum(int(s["hits"]) for s in sel), sum(int(s["ops"]) for s in sel)]

    before = [s for s in ss if start * 0.5 <= s["t"] < start]
    during = [s for s in ss if any(a <= s["t"] < b for a, b in spans)]
    last_leave = spans[-1][1]
    out["phases"] = [phase(before), phase(during), phase([s for s in ss if s["t"] >= last_leave + 1.0])]
    out["wrong"] = sum(int(s["wrong"]) for s in ss)
    out["drops"] = int(ss[-1]["drops"]) if ss else 0
    if c["end"]:
        out["p50_us"], out["p99_us"] = int(c["end"]["p50_ns"]) / 1000, int(c["end"]["p99_ns"]) / 1000
        out["latency_exact"] = True
    else:  # killed before its END line: window medians, an approximation
        p50 = sorted(int(s["p50_ns"]) for s in ss)
        p99 = sorted(int(s["p99_ns"]) for s in ss)
        out["p50_us"] = p50[len(p50) // 2] / 1000 if p50 else None
        out["p99_us"] = p99[len(p99) * 99 // 100] / 1000 if p99 else None
        out["latency_exact"] = False

    def mean_cached(sel):
        return sum(int(s["cached"]) for s in sel) / len(sel) / MIB if sel else 0

    out["cached"] = [mean_cached(before), mean_cached(during), int(ss[-1]["cached"]) / MIB if ss else 0]
    # Regrowth: from the co-tenant's last exit to the first sample holding 90%
    # of what was cached before it came.
    out["regrow_s"] = None
    if out["cached"][0] > 0:
        for s in ss:
            if s["t"] >= last_leave and int(s["cached"]) >= 0.9 * out["cached"][0] * MIB:
                out["regrow_s"] = s["t"] - last_leave
                break
    return out


def summarize(r, sc, seconds):
    """The figures of one run; every cache of it combined (two-caches: sums
    and ops-weighted rates, the worse latency and regrowth)."""
    spans = presence(r, sc, seconds)
    start = sc.cotenant(seconds)[0]
    per = [one_cache(c, spans, start, seconds) for c in r["caches"]]
    ops, hits = sum(p["ops"] for p in per), sum(p["hits"] for p in per)
    s = {"per_cache_hit": [p["hits"] / p["ops"] if p["ops"] else 0 for p in per]}
    s["hit_rate"] = hits / ops if ops else 0
    served = max(p["served_s"] for p in per)
    s["served_s"] = served
    s["ops_per_s"] = ops / served if served > 0 else 0
    for i, name in enumerate(("hit_before", "hit_during", "hit_after")):
        h, o = sum(p["phases"][i][0] for p in per), sum(p["phases"][i][1] for p in per)
        s[name] = h / o if o else None
    s["wrong"] = sum(p["wrong"] for p in per)
    s["drops"] = sum(p["drops"] for p in per)
    s["latency_exact"] = all(p["latency_exact"] for p in per)
    s["p50_us"] = max((p["p50_us"] for p in per if p["p50_us"] is not None), default=None)
    s["p99_us"] = max((p["p99_us"] for p in per if p["p99_us"] is not None), default=None)
    s["cached_mib"] = [sum(p["cached"][i] for p in per) for i in range(3)]
    rg = [p["regrow_s"] for p in per]
    s["regrow_s"] = None if any(x is None for x in rg) else max(rg)
    us = [u for _, u, _ in r["cgroup"]]
    s["peak_usage_mib"] = max(us + [0]) / MIB
    s["mean_usage_mib"] = sum(us) / len(us) / MIB if us else 0
    waves = r.get("cotenant_waves", [])
    s["obtain_ms"] = sum(w["obtain_ns"] for w in waves) / len(waves) / 1e6 if waves else None
    s["step_p99_ms"] = max(w["step_p99_ns"] for w in waves) / 1e6 if waves else None
    st = r.get("cotenant_stall")
    s["stall_p99_ms"] = st["p99_ns"] / 1e6 if st else None
    killed = ["cache%s (%s after %.1f s)" % ("" if len(per) == 1 else " %d" % (i + 1), c["died"], p["served_s"])
              for i, (c, p) in enumerate(zip(r["caches"], per)) if c["died"]]
    if r["cotenant_died"]:
        killed.append("co-tenant (%s)" % r["cotenant_died"])
    s["killed"] = ", ".join(killed) or "none"
    s["survived"] = r["oom_kills"] == 0 and not killed
    return s


# --- tables --------------------------------------------------------------------------

def scenario_of(name):
    return pc.scenario_by_name([name])[0]


def ran(raw, scn):
    """[(contender, result, summary)] of a scenario's runs that produced samples."""
    out = []
    for name, r in raw["results"][scn].items():
        if "rejected" not in r:
            out.append((pc.from_name(name), r, summarize(r, scenario_of(scn), raw["seconds"])))
    return out


def best_baseline(rows):
    """The surviving malloc cache with the highest hit rate, or None."""
    ok = [x for x in rows if x[0].baseline and x[2]["survived"]]
    return max(ok, key=lambda x: x[2]["hit_rate"]) if ok else None


def scenario_table(raw, scn):
    rows = ran(raw, scn)
    live = sorted([x for x in rows if x[2]["survived"]], key=lambda x: -x[2]["hit_rate"])
    dead = [x for x in rows if not x[2]["survived"]]
    L = ["| rank | contender | hit rate | before / during / after | ops/s | get p50 / p99 µs | OOM kills (who) "
         "| wrong | drops | regrow s | co-tenant obtain ms (step p99) | co-tenant stall p99 ms "
         "| cgroup peak / mean MiB | cached MiB before / during / end |",
         "|---:|---|---:|---|---:|---|---|---:|---:|---:|---|---:|---|---|"]
    for rank, (c, r, s) in [(i + 1, x) for i, x in enumerate(live)] + [("killed", x) for x in dead]:
        # A killed run's rates cover only its life before the kill: shown in
        # brackets and never ranked, so they cannot read better than a survivor's.
        k = "" if rank != "killed" else "†"
        hit = "%s%.3f%s" % ("(" if k else "", s["hit_rate"], ")†" if k else "")
        if len(s["per_cache_hit"]) > 1:
            hit += " (%s)" % " / ".join("%.3f" % h for h in s["per_cache_hit"])
        star = "" if s["latency_exact"] else "*"
        L.append("| %s | %s | %s | %s / %s / %s | %s%.0f%s | %s / %s%s | %d (%s) | %d | %d | %s | %s (%s) | %s "
                 "| %.0f / %.0f | %.0f / %.0f / %.0f |" % (
                     rank, c.name, hit, fmt(s["hit_before"], "%.3f"), fmt(s["hit_during"], "(%.3f)†" if k else "%.3f"),
                     fmt(s["hit_after"], "(%.3f)†" if k else "%.3f"), "(" if k else "", s["ops_per_s"], ")†" if k else "",
                     fmt(s["p50_us"]), fmt(s["p99_us"]), star, r["oom_kills"], s["killed"], s["wrong"], s["drops"],
                     fmt(s["regrow_s"], "%.1f", "no"), fmt(s["obtain_ms"]), fmt(s["step_p99_ms"], "%.1f"),
                     fmt(s["stall_p99_ms"], "%.2f"), s["peak_usage_mib"], s["mean_usage_mib"], *s["cached_mib"]))
    for name, r in raw["results"][scn].items():
        if "rejected" in r:
            L.append("| – | %s | not run: %s |%s" % (name, r["rejected"], " |" * 11))
    return L


def verdicts(raw):
    """Per scenario: the recommended dropalloc run against the best surviving
    baseline. [(scenario, dropalloc row or None, best row or None)]."""
    out = []
    for scn in raw["scenarios"]:
        rows = ran(raw, scn)
        d = next((x for x in rows if x[0].name == pc.RECOMMENDED), None)
        out.append((scn, d, best_baseline(rows)))
    return out


def summary_table(raw):
    L = ["| scenario | %s hit rate | best surviving baseline | its hit rate | ratio | co-tenant obtain ms: "
         "dropalloc / baseline | ratio | stall p99 ms: dropalloc / baseline | dropalloc OOM kills, wrong "
         "| survivors, best first (hit rate) |" % pc.RECOMMENDED,
         "|---|---:|---|---:|---:|---|---:|---|---|---|"]
    for scn, d, b in verdicts(raw):
        rows = ran(raw, scn)
        order = sorted([x for x in rows if x[2]["survived"]], key=lambda x: -x[2]["hit_rate"])
        ranking = ", ".join("%s %.3f" % (x[0].name, x[2]["hit_rate"]) for x in order)
        if d is None:
            L.append("| %s | not run |%s %s |" % (scn, " |" * 8, ranking))
            continue
        ds = d[2]
        bs = b[2] if b else None
        ratio = ds["hit_rate"] / bs["hit_rate"] if bs and bs["hit_rate"] else None
        oratio = ds["obtain_ms"] / bs["obtain_ms"] if bs and bs["obtain_ms"] and ds["obtain_ms"] is not None else None
        L.append("| %s | %s | %s | %s | %s | %s / %s | %s | %s / %s | %d, %d | %s |" % (
            scn, ("%.3f" % ds["hit_rate"]) if ds["survived"] else "(%.3f)† killed" % ds["hit_rate"],
            b[0].name if b else "none survived", fmt(bs and bs["hit_rate"], "%.3f"), fmt(ratio, "%.2fx"),
            fmt(ds["obtain_ms"]), fmt(bs and bs["obtain_ms"]), fmt(oratio, "%.2fx"), fmt(ds["stall_p99_ms"], "%.2f"),
            fmt(bs and bs["stall_p99_ms"], "%.2f"), d[1]["oom_kills"], ds["wrong"], ranking))
    return L


def targets(raw):
    v = verdicts(raw)
    L = []
    bad = [(scn, d) for scn, d, _ in v if d is None or not d[2]["survived"] or d[2]["wrong"]]
    L.append("- %s: 0 OOM kills and 0 wrong values in every scenario: **%s**%s." % (
        pc.RECOMMENDED, "met" if not bad else "missed",
        "" if not bad else " (" + ", ".join("%s: %s" % (scn, "not run" if d is None else "%s, %d wrong" % (
            d[2]["killed"], d[2]["wrong"])) for scn, d in bad) + ")"))
    ratios = [(scn, d[2]["hit_rate"] / b[2]["hit_rate"]) for scn, d, b in v if d and b and b[2]["hit_rate"]]
    under = [(scn, x) for scn, x in ratios if x < 1.0]
    L.append("- hit rate ≥ 1.0x the best baseline without an OOM kill, in every scenario: **%s**%s." % (
        "met" if ratios and not under else "missed",
        "" if not under else " (" + ", ".join("%s %.3fx" % u for u in under) + ")"))
    if ratios:
        g = math.exp(sum(math.log(x) for _, x in ratios) / len(ratios))
        L.append("- geometric mean over the %d scenarios of that ratio ≥ 1.05x: %.3fx: **%s**." % (
            len(ratios), g, "met" if g >= 1.05 else "missed"))
    obt = [(scn, d[2]["obtain_ms"] / b[2]["obtain_ms"]) for scn, d, b in v
           if d and b and b[2]["obtain_ms"] and d[2]["obtain_ms"] is not None]
    over = [(scn, x) for scn, x in obt if x > 1.5]
    L.append("- co-tenant's time to obtain its memory ≤ 1.5x its time beside the best adaptive cache, in every "
             "scenario: **%s**%s." % ("met" if obt and not over else "missed",
                                      "" if not over else " (" + ", ".join("%s %.2fx" % o for o in over) + ")"))
    none = [scn for scn, d, b in v if b is None]
    if none:
        L.append("- no baseline survived in: %s (nothing to compare with there)." % ", ".join(none))
    return L


def report(raw, mode):
    m = raw["machine"]
    L = ["# Cgroup pressure benchmark (%s)\n" % mode, "Command: `%s`\n" % raw["command"]]
    tc = m.get("libtcmalloc-minimal4", "?")
    L.append("Machine: %s CPUs, %s, %s; kernel %s; glibc %s, jemalloc %s, mimalloc %s%s (Debian). Date %s. "
             "Shared machine (other builds ran meanwhile): load average %s at the end; ops/s and latencies move "
             "with that load, hit rates and OOM outcomes much less. Wall time %.0f s.\n" % (
                 m["nproc"], m["cpu"], m["mem"], m["kernel"], m["libc6"], m["libjemalloc2"], m["libmimalloc2.0"],
                 ", tcmalloc %s" % tc if tc != "?" else "", m["date"], m["load"], raw.get("wall_s", 0)))
    L.append("Setup: one fresh child memory cgroup per run, limit %d MiB, %g s of serving; key space 4x the "
             "limit; rebuild %s. Co-tenant: ordinary memory, %d%% of the limit (%d MiB), arriving as each "
             "scenario says; its obtain time is the sum over its 1 MiB steps of mmap + writing every page (mean "
             "over its waves), its stall the p99 of a touch loop (every ms: map, write and unmap 64 KiB) while it "
             "is present. Runs alternate contenders within a scenario, one run each.\n" % (
                 raw["limit_mib"], raw["seconds"], raw["cost_note"], 100 * raw["cotenant_share"],
                 int(raw["limit_mib"] * raw["cotenant_share"])))
    opts = {}
    for scn in raw["scenarios"]:
        for name, r in raw["results"][scn].items():
            if "ready" in r and name not in opts:
                env = " ".join("%s=%s" % kv for kv in sorted(r.get("env", {}).items()))
                gb = r["ready"].get("give_back")
                opts[name] = "; ".join(x for x in (env or "defaults", gb and gb != "-" and "after a shrink: " + gb)
                                       if x)
    L.append("Allocator options: " + "; ".join("**%s** %s" % kv for kv in opts.items()) + ". dropalloc: "
             "defaults (decay 1 s, background decay thread); adaptive and neighbour call `trim()` after shedding.\n")
    L.append("## Summary\n")
    L.append("The recommended configuration (%s) against the best malloc cache that ran without an OOM kill "
             "(its own or the co-tenant's); † marks a run that was OOM-killed.\n" % pc.RECOMMENDED)
    L += summary_table(raw)
    L.append("\n## Against the targets\n")
    if raw["quick"]:
        L.append("Not judged: quick runs only check that the benchmark works (small limit, a few seconds, one run "
                 "per contender). Judge the targets from a full run.")
    else:
        L += targets(raw)
    L.append("")
    for scn in raw["scenarios"]:
        sc = scenario_of(scn)
        L.append("## %s: %s\n" % (scn, sc.what))
        L.append("Keys %s, values %s-%s, %d serving thread%s, %d cache process%s.\n" % (
            "uniform" if sc.zipf == 0 else "Zipf s = %g" % sc.zipf, pc.fmt_size(sc.values[0]),
            pc.fmt_size(sc.values[1]), sc.threads, "" if sc.threads == 1 else "s", sc.caches,
            "" if sc.caches == 1 else "es"))
        L += scenario_table(raw, scn)
        plots = raw.get("plots", {}).get(scn)
        L.append("\n" + ("Plots: [hit rate](%s), [memory](%s).\n" % tuple(plots) if isinstance(plots, list)
                         else "Plots: not drawn (%s).\n" % plots))
    L.append("Columns: hit rate over the whole run (two caches: combined, then each), then before the co-tenant "
             "(15-30% of the run), while it is present, and from 1 s after it last left. Rank: only runs without "
             "an OOM kill; a killed run's rates are in brackets with †: they cover only its life before the kill. "
             "Latency: one get, hit or miss with rebuild (`*`: killed, median of 100 ms window percentiles). "
             "Regrow: from the co-tenant's last exit to the first sample holding 90% of the bytes cached before it "
             "came. Cached: dropalloc, resident pages of its droppable mappings (smaps); LRU, value bytes held. "
             "Drops: values found lost and rebuilt. Wrong: served as valid with a checksum differing from the "
             "first build's (dropalloc-unsealed counts a mismatch as a drop, never serves it).")
    return "\n".join(L) + "\n"


# --- plots ---------------------------------------------------------------------------

COLORS = ["#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d", "#666666",
          "#1f78b4", "#b2df8a", "#fb9a99", "#cab2d6", "#33a02c", "#ff7f00"]


def plot(raw, scn, base):
    """Draws base-hitrate.svg and base-memory.svg; returns why not, or None."""
    gp = shutil.which("gnuplot")
    if not gp:
        return "gnuplot not installed"
    rows = ran(raw, scn)
    if not rows:
        return "nothing ran"
    sc, seconds, limit = scenario_of(scn), raw["seconds"], raw["limit_mib"]
    dat = base + ".dat.tmp"
    with open(dat, "w") as f:
        for c, r, _ in rows:
            for k, cache in enumerate(r["caches"][:2]):
                # Hit rate smoothed over 5 windows (0.5 s).
                f.write("# %s cache %d\n" % (c.name, k))
                ss = cache["samples"]
                for i, s in enumerate(ss):
                    w = ss[max(0, i - 4):i + 1]
                    o = sum(int(x["ops"]) for x in w)
                    f.write("%.3f %.4f %.2f\n" % (s["t"], sum(int(x["hits"]) for x in w) / o if o else 0,
                                                  int(s["cached"]) / MIB))
                f.write("\n\n")
            if len(r["caches"]) < 2:
                f.write("# none\n0 0 0\n\n\n")
            f.write("# cgroup\n" + "".join("%.3f %.2f\n" % (t, u / MIB) for t, u, _ in r["cgroup"]) + "\n\n")
            pts = sorted([tuple(p) for p in r["cotenant"]] + [(t, 0) for t in r.get("cotenant_left", [])])
            # A co-tenant that never reported still needs its (empty) block.
            f.write("# cotenant\n" + ("".join("%.3f %d\n" % p for p in pts) or "0 0\n") + "\n\n")
    shade = "\n".join("set object %d rect from %g, graph 0 to %g, graph 1 behind fc rgb '#eeeeee' fs solid noborder"
                      % (i + 1, a, b) for i, (a, b) in enumerate(sc.presence(seconds)))
    unshade = "\n".join("unset object %d" % (i + 1) for i in range(sc.waves))
    where = report_common.machine_label(raw["machine"])
    s = ["set terminal svg size 1100,620 dynamic noenhanced font 'sans,11' background '#ffffff'",
         "set output '%s-hitrate.svg.tmp'" % base,
         "set title %s" % report_common.gp_str("%s: hit rate (0.5 s windows), %d MiB cgroup; grey: co-tenant "
                                               "present; one run per contender\n%s" % (scn, limit, where)),
         "set xlabel 'seconds'", "set ylabel 'hit rate'", "set yrange [0:1]", "set xrange [0:%g]" % (seconds + 0.5),
         "set key outside right", "set grid", shade]
    lines = []
    for i, (c, _, sm) in enumerate(rows):
        dash = "dt 1" if not c.baseline else {"jemalloc": "dt 2", "mimalloc": "dt 3"}.get(c.malloc, "dt 4")
        lines.append("'%s' index %d using 1:2 with lines lw %s %s lc rgb '%s' title '%s%s'" % (
            dat, 4 * i, "1.5" if c.baseline else "2.5", dash, COLORS[i % len(COLORS)], c.name,
            "" if sm["survived"] else " (OOM kill)"))
    s.append("plot " + ", \\\n  ".join(lines))
    n = len(rows)
    cols = 3 if n > 4 else 2 if n > 1 else 1
    nr = (n + cols - 1) // cols
    s += [unshade, "set terminal svg size %d,%d dynamic noenhanced font 'sans,10' background '#ffffff'" % (
        max(400 * cols, 800), 260 * nr + 60), "set output '%s-memory.svg.tmp'" % base,
        "set multiplot layout %d,%d title %s" % (nr, cols, report_common.gp_str(
            "%s: memory, MiB (limit %d): cgroup usage, values resident, co-tenant\n%s" % (scn, limit, where))),
        "set key top left font ',8'", "set yrange [0:%d]" % int(limit * 1.1), "unset ylabel"]
    for i, (c, r, sm) in enumerate(rows):
        s += ["set title '%s%s'" % (c.name, "" if sm["survived"] else " (OOM kill: %s)" % sm["killed"]), shade]
        second = (", '' index %d using 1:3 with lines lw 1.5 lc rgb '#7570b3' title 'cached (2nd cache)'"
                  % (4 * i + 1)) if len(r["caches"]) > 1 else ""
        s.append(("plot '%s' index %d using 1:2 with lines lw 2 lc rgb '#444444' title 'cgroup', "
                  "'' index %d using 1:3 with lines lw 2 lc rgb '#1b9e77' title 'cached'%s, "
                  "'' index %d using 1:2 with steps lw 1.5 lc rgb '#d95f02' title 'co-tenant', "
                  "%d with lines dt 2 lc rgb '#999999' notitle") % (dat, 4 * i + 2, 4 * i, second, 4 * i + 3, limit))
        s.append(unshade)
    s.append("unset multiplot")
    p = subprocess.run([gp], input="\n".join(s) + "\n", text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if not os.environ.get("PRESSURE_KEEP_DAT"):
        os.remove(dat)
    if p.returncode != 0:
        return "gnuplot failed: " + p.stdout.strip()[-300:]
    for suffix in ("-hitrate.svg", "-memory.svg"):
        os.replace(base + suffix + ".tmp", base + suffix)
    return None


def write_outputs(raw, mode, out_dir, log):
    base = os.path.join(out_dir, "pressure-" + mode)
    raw["plots"] = {}
    for scn in raw["scenarios"]:
        err = plot(raw, scn, "%s-%s" % (base, scn))
        raw["plots"][scn] = err or ["pressure-%s-%s-hitrate.svg" % (mode, scn),
                                    "pressure-%s-%s-memory.svg" % (mode, scn)]
    text = report(raw, mode)
    report_common.write_atomically(base + ".md", text)
    report_common.write_atomically(base + ".json", json.dumps(raw, indent=1))
    print(text)
    log("pressure: wrote %s.md, %s.json and the plots" % (base, base))
