// mlockall(MCL_FUTURE) active in the process. Kernels differ here, and none of
// it is an allocator bug, so the test reports what this kernel does and checks
// only what must hold everywhere (allocation works or fails cleanly; the drop
// check stays right):
//   * 6.18 (seen): droppable mappings are not locked but prefaulted in full,
//     so each 4 MiB arena becomes resident at once;
//   * older 6.11+ kernels: they were locked, i.e. never dropped;
//   * without CAP_IPC_LOCK and with a small RLIMIT_MEMLOCK: EAGAIN.
// The detection (a fresh private page already resident) lives here; the
// README says what users see.
#include <doctest/doctest.h>

#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <new>
#include <string>

#include "allocator/dropalloc.h"
#include "tests/hardening/util.h"

namespace {

// True when new mappings get populated at mmap time, which is what
// MCL_FUTURE does: there is no other way to read the flag back.
bool future_mappings_locked() {
  void* p = mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return false;
  unsigned char v = 0;
  bool resident = mincore(p, 4096, &v) == 0 && (v & 1) != 0;
  munmap(p, 4096);
  return resident;
}

// Runs body in a child; returns its exit code and what it wrote to `report`.
int in_child(int (*body)(char* report, std::size_t n), std::string* report) {
  int fds[2];
  REQUIRE(pipe(fds) == 0);
  fflush(nullptr);
  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    close(fds[0]);
    char buf[1024] = {};
    int code = body(buf, sizeof buf);
    ssize_t ignored = write(fds[1], buf, strlen(buf));
    (void)ignored;
    _exit(code);
  }
  close(fds[1]);
  char buf[1024];
  for (ssize_t n; (n = read(fds[0], buf, sizeof buf)) > 0;) report->append(buf, static_cast<std::size_t>(n));
  close(fds[0]);
  int status = 0;
  REQUIRE(waitpid(pid, &status, 0) == pid);
  REQUIRE(WIFEXITED(status));
  return WEXITSTATUS(status);
}

int privileged(char* report, std::size_t n) {
  bool before = future_mappings_locked();
  if (mlockall(MCL_FUTURE) != 0) {
    snprintf(report, n, "mlockall(MCL_FUTURE) failed: %s", strerror(errno));
    return 0;
  }
  bool after = future_mappings_locked();
  dropalloc::droppable_resource res;
  auto b = res.allocate_block(64);
  std::string rec = hardening::smaps_record(b.ptr);
  long rss = hardening::smaps_kb(rec, "Rss"), size = hardening::smaps_kb(rec, "Size");
  long locked = hardening::smaps_kb(rec, "Locked");
  bool lo = hardening::smaps_has_flag(rec, "lo");
  snprintf(report, n,
           "backing %s; MCL_FUTURE detected %d -> %d; arena Size %ld kB, Rss %ld kB after one 64 B "
           "allocation (%s), Locked %ld kB, VmFlags lo %d%s",
           dropalloc::to_string(res.arena_backing()), before, after, size, rss,
           rss * 10 >= size * 9 ? "prefaulted in full" : "not prefaulted", locked, lo,
           (lo || locked > 0) && res.arena_backing() == dropalloc::backing::droppable
               ? "; WARNING: droppable arenas are locked, the kernel will never drop them"
               : "");
  int code = 0;
  if (before || !after) code |= 1;  // the detection must see the change
  std::memset(b.ptr, 3, 64);
  if (res.seal(b.ptr) != dropalloc::block_state::intact) code |= 2;
  res.drop_for_testing(b.ptr, 64);
  if (res.check(b.ptr, b.generation) != dropalloc::block_state::dropped) code |= 4;
  res.deallocate(b.ptr, 64);
  munlockall();
  return code;
}

int unprivileged(char* report, std::size_t n) {
  // As an ordinary user with 1 MiB of RLIMIT_MEMLOCK: locked mappings beyond
  // it fail with EAGAIN, droppable or not.
  rlimit lim{1 << 20, 1 << 20};
  if (setrlimit(RLIMIT_MEMLOCK, &lim) != 0 || (getuid() == 0 && setuid(65534) != 0)) {
    snprintf(report, n, "could not drop privileges: %s", strerror(errno));
    return 0;
  }
  if (mlockall(MCL_FUTURE) != 0) {
    snprintf(report, n, "mlockall(MCL_FUTURE) failed: %s", strerror(errno));
    return 0;
  }
  dropalloc::droppable_resource res;
  std::string what;
  try {
    void* p = res.allocate(64);
    what = "allocation succeeded";
    res.deallocate(p, 64);
  } catch (const std::bad_alloc& e) {
    what = std::string("allocation failed cleanly: ") + e.what();
  }
  snprintf(report, n, "%s; backing afterwards %s, fallback reason %d", what.c_str(),
           dropalloc::to_string(res.arena_backing()), dropalloc::os::system_os().fallback_reason());
  return 0;
}

}  // namespace

TEST_CASE("mlockall(MCL_FUTURE): detected and reported; allocation and the drop check still work") {
  if (hardening::kSanitized) {
    MESSAGE("skipped under ASan/TSan: locking their runtime's future mappings is unbounded");
    return;
  }
  {
    // Map the process-wide address-to-arena table (256 MiB, reserved) before
    // locking: locked, it would be populated in full.
    dropalloc::droppable_resource warm;
    warm.deallocate(warm.allocate(8), 8);
  }
  std::string report;
  CHECK(in_child(privileged, &report) == 0);
  MESSAGE("with CAP_IPC_LOCK: " << report);
  report.clear();
  CHECK(in_child(unprivileged, &report) == 0);
  MESSAGE("unprivileged, RLIMIT_MEMLOCK 1 MiB: " << report);
}
