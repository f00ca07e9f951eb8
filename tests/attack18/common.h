// What the attack18 tests share: expected contents of a write_and_seal and
// an OS layer (wrapping the fake) whose release_pages can be steered.
#pragma once

#include <errno.h>
#include <sys/mman.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <string>

#include "allocator/dropalloc.h"
#include "allocator/os/fake_os.h"
#include "tests/forwarding_os.h"
#include "allocator/os/os.h"

namespace attack18 {

inline constexpr std::size_t kPage = 4096;

inline std::string name(dropalloc::block_state s) { return dropalloc::to_string(s); }

// Bytes of value `seed`, length n: no zero byte except where `holes` asks
// (every third page all zeros, and a zero prefix in each page), so some
// pages of the value have no witness.
inline void fill(unsigned char* b, std::size_t n, std::uint64_t seed, bool holes = false) {
  std::uint64_t x = seed * 0x9e3779b97f4a7c15ull + 0x1234567;
  for (std::size_t i = 0; i < n; ++i) {
    if (i % 8 == 0) {
      x ^= x << 13;
      x ^= x >> 7;
      x ^= x << 17;
    }
    unsigned char v = static_cast<unsigned char>(x >> (8 * (i % 8)));
    if (v == 0) v = 1;
    if (holes && (((i / kPage) % 3 == 1) || (i % kPage) < (seed % 600))) v = 0;
    b[i] = v;
  }
}

// Whether [p, p + size) holds src[0, n) then zeros.
inline bool holds(const unsigned char* p, std::size_t size, const unsigned char* src, std::size_t n) {
  if (n != 0 && std::memcmp(p, src, n) != 0) return false;
  for (std::size_t i = n; i < size; ++i) {
    if (p[i] != 0) return false;
  }
  return true;
}

// An OS layer that forwards to a fake_os, with release_pages steerable:
// fail it (optionally after zeroing part of the range, as a kernel that gave
// up half way might), or run a callback before and after the real call.
class steered_os final : public dropalloc::testing::forwarding_os {
 public:
  dropalloc::os::fake_os inner;
  steered_os() : forwarding_os(inner) {}
  // 0: release as the fake does. Otherwise the errno returned.
  std::atomic<int> release_error{0};
  // With release_error: how many leading pages to zero before failing.
  std::atomic<std::size_t> zero_pages_before_failing{0};
  // Called before / after each release (inside the heap's seal lock).
  std::function<void(void*, std::size_t)> before_release, after_release;
  std::function<void()> on_settle;
  std::atomic<int> releases{0}, failed_releases{0};

  int release_pages(void* p, std::size_t b) noexcept override {
    ++releases;
    if (before_release) before_release(p, b);
    int rc = 0;
    if (int e = release_error.load(); e != 0) {
      std::size_t z = zero_pages_before_failing.load() * kPage;
      if (z > b) z = b;
      if (z != 0) madvise(p, z, MADV_DONTNEED);
      ++failed_releases;
      rc = e;
    } else {
      rc = inner.release_pages(p, b);
    }
    if (after_release) after_release(p, b);
    return rc;
  }
  int settle_translations() noexcept override {
    if (on_settle) on_settle();
    return inner.settle_translations();
  }
};

}  // namespace attack18
