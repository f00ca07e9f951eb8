// An os_interface over fake_os for the private fallback that checks, at each
// seal_pages() call, the promise "a block sharing a page with others is given
// to the kernel only while all of them are sealed (or dropped)": every block
// touching an advised page must be sealed or dropped at that moment. The
// advising thread holds the seal locks of all of them while it calls
// seal_pages (core/seal_check.cc, advise_sealed), so their states cannot
// move while this reads them. With `drop_percent`, that share of the calls
// zeroes the range at once (the kernel reclaiming what was advised).
#pragma once

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <mutex>
#include <random>
#include <string>
#include <vector>

#include "allocator/core/segment.h"
#include "allocator/dropalloc.h"
#include "allocator/os/fake_os.h"
#include "tests/forwarding_os.h"

namespace attack17 {

class page_guard_os final : public dropalloc::testing::forwarding_os {
 public:
  explicit page_guard_os(dropalloc::backing b = dropalloc::backing::private_fallback)
      : forwarding_os(inner), backing_(b) {}
  dropalloc::os::fake_os inner;
  std::atomic<int> drop_percent{0};
  std::atomic<long> calls{0}, pages{0}, dropped_calls{0};
  // Called before the check (tests only).
  void (*on_seal)(void* ctx, void* p, std::size_t n) = nullptr;
  void* on_seal_ctx = nullptr;

  std::vector<std::string> violations() {
    std::lock_guard g(m_);
    return violations_;
  }

  void* map_arena(std::size_t bytes, std::size_t alignment, int* err) noexcept override {
    std::lock_guard g(map_m_);
    return inner.map_arena(bytes, alignment, err);
  }
  void unmap_arena(void* p, std::size_t bytes) noexcept override {
    std::lock_guard g(map_m_);
    inner.unmap_arena(p, bytes);
  }
  int seal_pages(void* p, std::size_t bytes) noexcept override {
    if (on_seal != nullptr) on_seal(on_seal_ctx, p, bytes);
    calls.fetch_add(1, std::memory_order_relaxed);
    if (backing_ != dropalloc::backing::droppable) check_pages(p, bytes);
    const int pct = drop_percent.load(std::memory_order_relaxed);
    if (pct > 0 && static_cast<int>(rng() % 100) < pct) {
      dropped_calls.fetch_add(1, std::memory_order_relaxed);
      return inner.drop_pages(p, bytes);
    }
    return inner.seal_pages(p, bytes);
  }
  dropalloc::backing arena_backing() noexcept override { return backing_; }
  int fallback_reason() noexcept override { return -1; }

 private:
  std::uint64_t rng() {
    thread_local std::mt19937_64 r(std::random_device{}());
    return r();
  }
  void note(const char* what, void* page, std::uint64_t j, int kind) {
    std::lock_guard g(m_);
    if (violations_.size() >= 20) return;
    char line[200];
    std::snprintf(line, sizeof line, "seal_pages over page %p: block %llu on it is %s (state %d)", page,
                  static_cast<unsigned long long>(j), what, kind);
    violations_.push_back(line);
  }
  void check_pages(void* p, std::size_t bytes) {
    namespace core = dropalloc::core;
    auto* from = static_cast<std::byte*>(p);
    for (std::size_t off = 0; off < bytes; off += core::kPage) {
      std::byte* page = from + off;
      pages.fetch_add(1, std::memory_order_relaxed);
      core::segment* s = core::segment_of(page);
      if (s == nullptr) {
        note("outside any arena", page, 0, -1);
        continue;
      }
      if (s->cls == core::kLargeClass) continue;  // one block: the advised one
      const std::size_t pno = static_cast<std::size_t>(page - s->base) / core::kPage;
      const std::uint32_t bump = __atomic_load_n(&s->bump, __ATOMIC_ACQUIRE);
      const core::block_run on = core::page_blocks(s, pno);
      for (std::uint64_t j = on.first; j <= on.last; ++j) {
        if (j >= bump) {
          note("never handed out (may be handed out and written now)", page, j, -1);
          continue;
        }
        const int kind = s->state[j].load(std::memory_order_acquire) & core::state::kMask;
        if (kind == core::state::kLive) note("live (unsealed: ordinary memory)", page, j, kind);
        if (kind == core::state::kFree) note("free (may be handed out and written now)", page, j, kind);
      }
    }
  }

  dropalloc::backing backing_;
  std::mutex m_, map_m_;
  std::vector<std::string> violations_;
};

}  // namespace attack17
