"""What the benchmark drivers (compare.py, pressure.py) share: the facts about
the machine a report states, and writing a result file so that a reader never
sees half of it."""
import datetime
import os
import platform
import shutil
import subprocess


def package_version(pkg):
    """The installed Debian version of pkg, or "?"."""
    if not shutil.which("dpkg-query"):
        return "?"
    r = subprocess.run(["dpkg-query", "-W", "-f=${Version}", pkg], text=True, stdout=subprocess.PIPE,
                       stderr=subprocess.DEVNULL)
    return r.stdout.strip() if r.returncode == 0 else "?"


def machine_facts(packages=("libjemalloc2", "libmimalloc2.0", "libc6", "g++")):
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
