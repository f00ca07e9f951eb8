// MAP_DROPPABLE absent: the BUILD rule runs this once per errno a kernel or
// sandbox may return (DROPALLOC_TEST_DROPPABLE_ERRNO makes the probe fail with
// it), each in its own process since the backing is decided once per process.
#include <doctest/doctest.h>

#include <errno.h>
#include <stdlib.h>

#include <cstring>
#include <string>

#include "allocator/dropalloc.h"
#include "tests/hardening/util.h"

using dropalloc::backing;
using dropalloc::block_state;

namespace {

const char* expected_name(int err) {
  switch (err) {
    case EINVAL: return "EINVAL";        // kernels before 6.11, MAP_LOCKED/MAP_HUGETLB
    case EOPNOTSUPP: return "EOPNOTSUPP";  // 32-bit kernels after the errno fix
    case 524: return "ENOTSUPP";         // 32-bit kernels before it (kernel-internal errno)
    case EPERM: return "EPERM";          // seccomp filters
    case EAGAIN: return "EAGAIN";        // mlockall(MCL_FUTURE) with a small RLIMIT_MEMLOCK
    case ENOSYS: return "ENOSYS";        // seccomp filters, emulators
  }
  return "?";
}

}  // namespace

TEST_CASE("a refused MAP_DROPPABLE probe falls back once, names the errno, and everything works") {
  const char* env = getenv("DROPALLOC_TEST_DROPPABLE_ERRNO");
  REQUIRE(env != nullptr);
  int err = atoi(env);
  CAPTURE(err);
  hardening::stderr_capture capture;
  dropalloc::droppable_resource res;  // the first resource: the probe runs now
  backing b = res.arena_backing();
  dropalloc::droppable_resource second;
  backing b2 = second.arena_backing();  // decided once: no second probe or line
  std::string out = capture.text();
  CHECK(b == backing::private_fallback);
  CHECK(b2 == backing::private_fallback);
  CHECK(dropalloc::os::system_os().fallback_reason() == err);
  CHECK_FALSE(res.stats().droppable);
  CHECK(hardening::count_lines(out) == 2);  // the backing, then the options (verbose)
  CHECK(out.find("DROPALLOC_TEST_DROPPABLE_ERRNO=" + std::to_string(err)) != std::string::npos);
  std::string want = "errno " + std::to_string(err) + ": " + expected_name(err) + ")";
  CHECK_MESSAGE(out.find(want) != std::string::npos, out);

  // The fallback is a working allocator with the same drop check.
  std::pmr::vector<std::pmr::string> v(&res);
  for (int i = 0; i < 2000; ++i) v.emplace_back(100 + i % 300, 'a');
  CHECK(v[1999].size() == 100 + 1999 % 300);
  auto blk = res.allocate_block(30000);
  std::memset(blk.ptr, 7, 30000);
  void* in_arena = res.allocate(64);
  CHECK(!hardening::smaps_has_flag(hardening::smaps_record(in_arena), "dp"));
  CHECK(hardening::smaps_has_flag(hardening::smaps_record(in_arena), "wf"));
  CHECK(hardening::smaps_has_flag(hardening::smaps_record(in_arena), "dd"));
  CHECK(res.seal(blk.ptr) == block_state::intact);
  CHECK(res.drop_for_testing(static_cast<char*>(blk.ptr) + 8192, 1) == 0);
  CHECK(res.check(blk.ptr, blk.generation) == block_state::dropped);
  res.deallocate(in_arena, 64);
  res.deallocate(blk.ptr, 30000);
}
