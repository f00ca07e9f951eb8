// MAP_DROPPABLE present: the probe picks it, says so once, and every arena
// (small classes and mappings of their own) carries the kernel's flags.
#include <doctest/doctest.h>

#include <cstring>
#include <string>

#include "allocator/dropalloc.h"
#include "tests/hardening/util.h"

using dropalloc::backing;

TEST_CASE("the kernel's MAP_DROPPABLE is used and visible in smaps") {
  hardening::stderr_capture capture;
  dropalloc::droppable_resource res;
  backing b = res.arena_backing();
  std::string out = capture.text();
  // DROPALLOC_VERBOSE=1 from the BUILD rule: the backing, then the options.
  CHECK(hardening::count_lines(out) == 2);
  CHECK(out.find("dropalloc: options: DROPALLOC_VERBOSE=on") != std::string::npos);
  if (b != backing::droppable) {
    // Another kernel: the errno matrix covers this case; say what happened.
    MESSAGE("MAP_DROPPABLE is not available here: " << out);
    CHECK(b == backing::private_fallback);
    CHECK(dropalloc::os::system_os().fallback_reason() > 0);
    return;
  }
  CHECK(out.find("MAP_DROPPABLE memory") != std::string::npos);
  CHECK(dropalloc::os::system_os().fallback_reason() == 0);
  CHECK(res.stats().droppable);
  for (std::size_t size : {std::size_t{24}, std::size_t{4096}, std::size_t{200000},
                           std::size_t{3} << 20}) {
    CAPTURE(size);
    void* p = res.allocate(size);
    std::memset(p, 1, size);
    std::string rec = hardening::smaps_record(p);
    // dp: droppable; wf: wiped in a forked child; dd: left out of core dumps;
    // nh: the allocator's MADV_NOHUGEPAGE (4 KiB drops).
    for (const char* flag : {"dp", "wf", "dd", "nh"}) {
      CAPTURE(flag);
      CHECK(hardening::smaps_has_flag(rec, flag));
    }
    CHECK_FALSE(hardening::smaps_has_flag(rec, "lo"));
    res.deallocate(p, size);
  }
}
