// The PSI source with /proc/pressure/memory replaced: a forked child enters
// a new mount namespace and bind-mounts a directory of its own over
// /proc/pressure, so the file can be written (by rename) and the monitor and
// a keeper read it. Root only (no-sandbox); skipped where the mount fails.
//
// Checked: a stall total that does not move sheds nothing however high avg10
// is; a total going backwards (or missing) falls back to avg10 at most once
// per 10 s; a sustained stall elsewhere on the machine is measured (how much
// of the cache survives one second of it is reported).
#include <doctest/doctest.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstring>
#include <string>

#include "allocator/cache/headroom.h"
#include "allocator/dropalloc.h"
#include "tests/attack13/common.h"

namespace {

using namespace attack13;

void psi(const std::string& dir, double avg10, std::uint64_t total, bool with_total = true) {
  char buf[256];
  if (with_total) {
    std::snprintf(buf, sizeof buf, "some avg10=%.2f avg60=0.00 avg300=0.00 total=%llu\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
                  avg10, static_cast<unsigned long long>(total));
  } else {
    std::snprintf(buf, sizeof buf, "some avg10=%.2f avg60=0.00 avg300=0.00\n", avg10);
  }
  put(dir, "memory", buf);
}

// Runs in the child; returns a report, starting "FAIL" when a check failed.
std::string scenarios(const std::string& dir) {
  std::string out;
  auto fail = [&](const std::string& why) { out += "FAIL " + why + "\n"; };
  dropalloc::pressure_thresholds t{0.95, 0.90, 10.0, 0.05};
  {
    psi(dir, 50, 1000000);
    dropalloc::pressure_monitor m{dropalloc::os::memory_cgroup{}};
    if (m.source() != dropalloc::pressure_source::psi) return "FAIL the monitor did not take the fake PSI: " + m.description();
    dropalloc::pressure_reading r;
    int sheds = 0;
    m.read(&r);
    m.assess(r, t);  // the first read has no interval: avg10 (50) sheds once
    for (int i = 0; i < 20; ++i) {
      usleep(2000);
      m.read(&r);
      if (m.assess(r, t).fraction > 0) ++sheds;
    }
    out += "avg10 50, total still: sheds in 20 polls after the first " + std::to_string(sheds) + "\n";
    if (sheds != 0) fail("a still total shed");
    psi(dir, 50, 500);  // backwards (a counter that restarted)
    int back = 0;
    for (int i = 0; i < 20; ++i) {
      usleep(2000);
      m.read(&r);
      if (m.assess(r, t).fraction > 0) ++back;
    }
    out += "total backwards, avg10 50: sheds in 20 polls " + std::to_string(back) + "\n";
    if (back > 1) fail("backwards total shed more than once");
    psi(dir, 50, 0, false);
    int missing = 0;
    for (int i = 0; i < 20; ++i) {
      usleep(2000);
      m.read(&r);
      if (m.assess(r, t).fraction > 0) ++missing;
    }
    out += "no total, avg10 50: sheds in 20 polls " + std::to_string(missing) + "\n";
    if (missing > 1) fail("avg10 alone shed more than once in 10 s");
    psi(dir, 0, 1000000);
    m.read(&r);
    psi(dir, 0, 1000000 + 1000000000ull * 1000);  // a wild jump forward: one shed, no UB
    usleep(2000);
    m.read(&r);
    auto s = m.assess(r, t);
    out += "a jump of 1e12 us: stall " + std::to_string(r.psi_stall_percent) + "%, fraction " +
           std::to_string(s.fraction) + "\n";
    if (!(s.fraction == t.psi_fraction)) fail("jump not clamped to psi_fraction");
  }
  {
    // A sustained stall of 15% of the time somewhere on the machine.
    dropalloc::cache<int> c;
    for (int k = 0; k < 1000; ++k) c.get(k, [] { return std::string(4000, 'v'); });
    const std::uint64_t before = c.bytes_live();
    std::atomic<bool> stop{false};
    auto start = std::chrono::steady_clock::now();
    psi(dir, 15, 1000000);
    std::thread driver([&] {
      while (!stop.load()) {
        auto us = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - start).count();
        psi(dir, 15, 1000000 + static_cast<std::uint64_t>(us) * 15 / 100);
        usleep(1000);
      }
    });
    {
      dropalloc::headroom_options o;  // 10 ms poll, 5% per poll at >= 10% stall
      dropalloc::headroom_keeper k(dropalloc::pressure_monitor{dropalloc::os::memory_cgroup{}},
                                   dropalloc::shed_coldest(c), o);
      std::this_thread::sleep_for(std::chrono::seconds(1));
      out += "a 15% stall elsewhere for 1 s: sheds " + std::to_string(k.sheds()) + ", cache left " +
             std::to_string(c.bytes_live() * 100 / before) + "% (" + k.description() + ")\n";
    }
    stop.store(true);
    driver.join();
  }
  return out;
}

}  // namespace

TEST_CASE("PSI differencing against a fake /proc/pressure/memory") {
  const std::string dir = make_tmpdir();
  int back[2];
  REQUIRE(pipe(back) == 0);
  std::fflush(nullptr);
  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    close(back[0]);
    std::string report;
    psi(dir, 0, 1);
    if (unshare(CLONE_NEWNS) != 0 || mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0 ||
        mount(dir.c_str(), "/proc/pressure", nullptr, MS_BIND, nullptr) != 0) {
      report = std::string("SKIP cannot bind over /proc/pressure: ") + strerror(errno);
    } else {
      report = scenarios(dir);
    }
    if (write(back[1], report.data(), report.size()) < 0) _exit(1);
    _exit(0);
  }
  close(back[1]);
  std::string report;
  char buf[512];
  for (ssize_t n; (n = read(back[0], buf, sizeof buf)) > 0;) report.append(buf, static_cast<std::size_t>(n));
  close(back[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  MESSAGE(report);
  REQUIRE(WIFEXITED(status));
  CHECK(report.find("FAIL") == std::string::npos);
}
