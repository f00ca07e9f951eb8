// An os_interface over a shared fake_os that checks every seal_pages() call:
// the range must lie inside one arena mapped (and not yet unmapped) through
// this very view, i.e. by the heap that advises it. Views share the fake (and
// its address reuse), so a heap may find another heap's arena, or a new arena
// of its own, at an address it once queued advice for.
#pragma once

#include <cstdint>
#include <cstdio>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "allocator/dropalloc.h"
#include "allocator/os/fake_os.h"
#include "tests/forwarding_os.h"

namespace attack16 {

struct arena_registry {
  std::mutex m;
  struct arena {
    std::size_t bytes;
    const void* view;
  };
  std::map<std::uintptr_t, arena> arenas;
  std::vector<std::string> violations;
  long calls = 0;
};

class checking_os final : public dropalloc::testing::forwarding_os {
 public:
  checking_os(dropalloc::os::fake_os& inner, arena_registry& reg, dropalloc::backing b)
      : forwarding_os(inner), inner_(inner), reg_(reg), backing_(b) {}
  // Called from seal_pages before the check and the inner call (tests only).
  void (*on_seal)(void* ctx, void* p, std::size_t n) = nullptr;
  void* on_seal_ctx = nullptr;

  void* map_arena(std::size_t bytes, std::size_t alignment, int* err) noexcept override {
    std::lock_guard g(reg_.m);  // also serialises the fake's address reuse
    void* p = inner_.map_arena(bytes, alignment, err);
    if (p != nullptr) reg_.arenas[reinterpret_cast<std::uintptr_t>(p)] = {bytes, this};
    return p;
  }
  void unmap_arena(void* p, std::size_t bytes) noexcept override {
    std::lock_guard g(reg_.m);
    reg_.arenas.erase(reinterpret_cast<std::uintptr_t>(p));
    inner_.unmap_arena(p, bytes);
  }
  int seal_pages(void* p, std::size_t bytes) noexcept override {
    if (on_seal != nullptr) on_seal(on_seal_ctx, p, bytes);
    {
      std::lock_guard g(reg_.m);
      ++reg_.calls;
      const auto a = reinterpret_cast<std::uintptr_t>(p);
      auto it = reg_.arenas.upper_bound(a);
      bool ok = false;
      const char* why = "no arena mapped there";
      if (it != reg_.arenas.begin()) {
        --it;
        if (a + bytes <= it->first + it->second.bytes) {
          ok = it->second.view == this;
          if (!ok) why = "another heap's arena";
        } else if (a < it->first + it->second.bytes) {
          why = "runs past the end of its arena";
        }
      }
      if (!ok && reg_.violations.size() < 20) {
        char line[200];
        std::snprintf(line, sizeof line, "seal_pages(%p, %zu) by a %s heap: %s", p, bytes,
                      backing_ == dropalloc::backing::droppable ? "droppable" : "fallback", why);
        reg_.violations.push_back(line);
      }
    }
    return inner_.seal_pages(p, bytes);
  }
  dropalloc::backing arena_backing() noexcept override { return backing_; }
  int fallback_reason() noexcept override { return -1; }

 private:
  dropalloc::os::fake_os& inner_;
  arena_registry& reg_;
  dropalloc::backing backing_;
};

// Options for a resource over `os` that unmaps empty arenas at once and has
// no purger thread: arenas come and go as the tests free.
inline dropalloc::resource_options options_for(dropalloc::os::os_interface* os) {
  dropalloc::resource_options o;
  o.os = os;
  o.empty_arena_decay_ms = 0;
  o.background_decay = false;
  return o;
}

// One fake OS that zeroes what is advised and reuses unmapped addresses, seen
// through two checking views: droppable and private fallback.
struct two_views {
  dropalloc::os::fake_os inner;
  arena_registry reg;
  checking_os dview{inner, reg, dropalloc::backing::droppable};
  checking_os pview{inner, reg, dropalloc::backing::private_fallback};
  two_views() {
    inner.reuse_unmapped_arena = true;
    inner.drop_on_seal = true;
  }
};

}  // namespace attack16
