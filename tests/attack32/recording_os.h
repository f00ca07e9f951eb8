// An OS layer that records every seal_pages() range (the MADV_FREE advice)
// with a sequence number, then passes the call on: tests ask whether a page
// was advised, and whether after a given point. Thread-safe.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <vector>

#include "allocator/core/heap.h"
#include "allocator/os/fake_os.h"
#include "tests/core_heap.h"
#include "tests/forwarding_os.h"

namespace dropalloc::testing {

struct advice_event {
  std::uintptr_t from;
  std::uintptr_t to;  // exclusive
  std::uint64_t seq;
};

struct recording_os : forwarding_os {
  explicit recording_os(os::os_interface& r) : forwarding_os(r) {}
  std::mutex lock;
  std::vector<advice_event> events;
  std::atomic<std::uint64_t> next_seq{1};
  int seal_pages(void* p, std::size_t b) noexcept override {
    {
      std::lock_guard<std::mutex> g(lock);
      const auto a = reinterpret_cast<std::uintptr_t>(p);
      events.push_back(advice_event{a, a + b, next_seq.fetch_add(1)});
    }
    return real.seal_pages(p, b);
  }
  // The sequence number the next advice will have.
  std::uint64_t mark() { return next_seq.load(); }
  // Whether the page holding address a was advised by an event numbered >= since.
  bool advised(std::uintptr_t a, std::uint64_t since = 0) {
    const std::uintptr_t page = a & ~std::uintptr_t{4095};
    std::lock_guard<std::mutex> g(lock);
    for (const auto& e : events) {
      if (e.seq >= since && e.from <= page && page < e.to) return true;
    }
    return false;
  }
  // Every page advised by events numbered >= since.
  std::vector<std::uintptr_t> pages_since(std::uint64_t since) {
    std::vector<std::uintptr_t> out;
    std::lock_guard<std::mutex> g(lock);
    for (const auto& e : events) {
      if (e.seq < since) continue;
      for (std::uintptr_t p = e.from; p < e.to; p += 4096) out.push_back(p);
    }
    return out;
  }
  std::size_t bytes_since(std::uint64_t since) {
    std::size_t n = 0;
    std::lock_guard<std::mutex> g(lock);
    for (const auto& e : events) {
      if (e.seq >= since) n += e.to - e.from;
    }
    return n;
  }
};

// A core heap over the fake OS reporting MAP_DROPPABLE arenas (the only ones
// whose seal advice is queued), its advice recorded, nothing decaying on a
// clock. Test fixtures derive from it.
struct recorded_heap {
  os::fake_os fake;
  recording_os rec{fake};
  core::heap h;
  explicit recorded_heap(bool thread_cache = true) : h(options(thread_cache)) {}

 private:
  core::heap_options options(bool thread_cache) {
    fake.reported_backing = backing::droppable;  // recording_os forwards arena_backing()
    core::heap_options o = with_os_no_decay(&rec);
    o.thread_cache = thread_cache;
    return o;
  }
};

}  // namespace dropalloc::testing
