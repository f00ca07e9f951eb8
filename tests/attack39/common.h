// Shared helpers for attack round 39 (c7be133, retired mappings in batches).
#pragma once

#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <thread>

#include "allocator/core/heap.h"
#include "allocator/core/segment.h"
#include "allocator/os/fake_os.h"
#include "tests/core_heap.h"
#include "tests/forwarding_os.h"
#include "tests/pattern.h"

namespace attack39 {

namespace core = dropalloc::core;
namespace os = dropalloc::os;

constexpr std::size_t kPage = 4096;
constexpr std::size_t kLarge = 300 * 1024;
constexpr int kCacheSlots = 16;

using dropalloc::testing::free_growing;  // tests/core_heap.h (first written in this round)

// A flusher preempted in the middle of its batch: tests/forwarding_os.h
// (first written here).
using dropalloc::testing::stalling_os;

// An OS layer that the test declares gone (as if destroyed) once the heap
// using it is destroyed: every call after that is counted.
struct tomb_os : dropalloc::testing::forwarding_os {
  using forwarding_os::forwarding_os;
  std::atomic<bool> dead{false};
  std::atomic<int> calls_after_death{0};
  void unmap_arena(void* p, std::size_t b) noexcept override {
    if (dead.load()) ++calls_after_death;
    real.unmap_arena(p, b);
  }
  void unmap_metadata(void* p, std::size_t b) noexcept override {
    if (dead.load()) ++calls_after_death;
    real.unmap_metadata(p, b);
  }
};

}  // namespace attack39
