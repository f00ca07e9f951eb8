// What the attack19 tests share: contents, snapshots and an OS layer (a
// wrapper of the fake) with callbacks at each barrier and each advice.
#pragma once

#include <sys/mman.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "allocator/dropalloc.h"
#include "allocator/os/fake_os.h"
#include "tests/forwarding_os.h"
#include "allocator/os/os.h"
#include "tests/pattern.h"

namespace attack19 {

inline constexpr std::size_t kPage = 4096;

inline std::string name(dropalloc::block_state s) { return dropalloc::to_string(s); }

// Contents of seed `seed`: no zero byte, so every word witnesses its page.
using dropalloc::testing::fill;
using dropalloc::testing::holds;

inline std::vector<unsigned char> snapshot(const void* p, std::size_t n) {
  const auto* b = static_cast<const unsigned char*>(p);
  return std::vector<unsigned char>(b, b + n);
}

// An OS layer forwarding to a fake_os, with a callback at each barrier
// (before the real one) and at each advice (after the fake's seal_pages).
class steered_os final : public dropalloc::testing::forwarding_os {
 public:
  dropalloc::os::fake_os inner;
  steered_os() : forwarding_os(inner) {}
  std::function<void()> on_settle;
  std::function<void(void*, std::size_t)> on_seal_pages;
  // Barriers that fail (counted from 1) with EAGAIN: -1 every one, 0 none.
  std::atomic<int> fail_settle{0};
  std::atomic<int> settles{0}, seal_calls{0};

  int seal_pages(void* p, std::size_t b) noexcept override {
    ++seal_calls;
    int rc = inner.seal_pages(p, b);
    if (on_seal_pages) on_seal_pages(p, b);
    return rc;
  }
  int settle_translations() noexcept override {
    const int k = ++settles;
    if (on_settle) on_settle();
    const int f = fail_settle.load();
    if (f == -1 || f == k) return EAGAIN;
    return inner.settle_translations();
  }
};

inline dropalloc::resource_options on(steered_os& os, dropalloc::backing b) {
  os.inner.reported_backing = b;
  dropalloc::resource_options o;
  o.os = &os;
  return o;
}

// Zeroes the whole page holding p, as a kernel drop would (the fake's
// drop_pages wants a page-aligned start).
inline void drop_page_of(dropalloc::droppable_resource& r, const void* p) {
  auto a = reinterpret_cast<std::uintptr_t>(p) & ~(std::uintptr_t{kPage} - 1);
  (void)r.drop_for_testing(reinterpret_cast<void*>(a), kPage);
}

}  // namespace attack19
