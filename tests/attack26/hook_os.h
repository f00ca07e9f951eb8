// An OS layer over another one whose release_pages runs a hook first, with
// the range: for tests that act in the middle of a release (tests/attack26).
#pragma once

#include <errno.h>

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "allocator/os/os.h"
#include "tests/forwarding_os.h"

namespace dropalloc::testing {

struct hook_os final : forwarding_os {
  std::atomic<std::uint64_t> released_bytes{0};
  std::atomic<std::uint64_t> releases{0};
  std::atomic<std::int64_t> maps{0};
  using hook_fn = void (*)(void* ctx, void* p, std::size_t bytes);
  std::atomic<hook_fn> on_release{nullptr};
  std::atomic<int> fail_releases{0};  // the next this many releases are refused (EAGAIN)
  std::atomic<int> in_hook{0};        // calls inside the hook now
  void* ctx = nullptr;
  explicit hook_os(os::os_interface& r) : forwarding_os(r) {}
  // Clears the hook and waits for calls inside it (the purger's) to leave.
  void clear_hook() {
    on_release = nullptr;
    while (in_hook.load() != 0) {
    }
  }
  void* map_arena(std::size_t b, std::size_t a, int* e) noexcept override {
    void* p = real.map_arena(b, a, e);
    if (p != nullptr) ++maps;
    return p;
  }
  void unmap_arena(void* p, std::size_t b) noexcept override {
    --maps;
    real.unmap_arena(p, b);
  }
  int release_pages(void* p, std::size_t b) noexcept override {
    if (hook_fn f = on_release.load()) {
      ++in_hook;
      if ((f = on_release.load()) != nullptr) f(ctx, p, b);
      --in_hook;
    }
    int want = fail_releases.load();
    while (want > 0) {
      if (fail_releases.compare_exchange_weak(want, want - 1)) return EAGAIN;
    }
    released_bytes += b;
    ++releases;
    return real.release_pages(p, b);
  }
};

}  // namespace dropalloc::testing
