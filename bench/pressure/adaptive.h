// The adaptive budget of the pressure benchmark's baselines: what a cache with
// a memory monitor (polling its cgroup, shrinking before the limit) does,
// rather than a budget fixed at start. Used by the LRU contenders on every
// malloc and, to separate policy from allocator, over dropalloc values.
//
// A monitor thread polls the process's memory cgroup every `poll_ms`: above
// 90% of the limit it lowers the budget by the excess plus 5% of the limit
// and asks for a shrink; otherwise it grows the budget by 2% of the limit per
// poll, up to the limit. The budget starts at 50%, so the cache's own fill
// cannot outrun the poll. Eviction and handing memory back happen on the
// serving thread (take_shrink), as they would in a cache whose monitor only
// sets a number.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>
#include <thread>

#include "allocator/os/cgroup.h"

namespace pressure {

class adaptive_budget {
 public:
  // poll_ms 0: no monitor, the budget stays `fixed` (0: none).
  adaptive_budget(int poll_ms, std::uint64_t fixed) : poll_ms_(poll_ms), budget_(fixed) {}
  ~adaptive_budget() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  adaptive_budget(const adaptive_budget&) = delete;
  adaptive_budget& operator=(const adaptive_budget&) = delete;

  // Call after the driver moved this process into its cgroup. Exits with
  // status 5, saying why, when an adaptive cache has no limited cgroup.
  void start() {
    if (poll_ms_ <= 0) return;
    std::string why;
    dropalloc::os::cgroup_memory_state st;
    if (!dropalloc::os::find_memory_cgroup(&cg_, &why) || !dropalloc::os::read_cgroup_state(cg_, &st) ||
        std::min(st.limit, st.high) == UINT64_MAX) {
      std::fprintf(stderr, "adaptive budget: no limited memory cgroup to watch%s%s\n", why.empty() ? "" : ": ",
                   why.c_str());
      std::_Exit(5);
    }
    limit_ = std::min(st.limit, st.high);
    budget_ = limit_ / 2;
    thread_ = std::thread([this] { watch(); });
  }

  std::uint64_t budget() const noexcept { return budget_.load(std::memory_order_relaxed); }
  // True once after each lowering of the budget: evict to it, then hand back.
  bool take_shrink() noexcept {
    return shrink_.load(std::memory_order_relaxed) && shrink_.exchange(false, std::memory_order_relaxed);
  }
  bool adaptive() const noexcept { return poll_ms_ > 0; }

 private:
  void watch() {
    const std::uint64_t target = limit_ / 10 * 9, step_down = limit_ / 20, step_up = limit_ / 50;
    const std::uint64_t floor = limit_ / 20;
    while (!stop_.load(std::memory_order_relaxed)) {
      dropalloc::os::cgroup_memory_state st;
      if (dropalloc::os::read_cgroup_state(cg_, &st)) {
        std::uint64_t b = budget_.load(std::memory_order_relaxed);
        if (st.usage > target) {
          std::uint64_t cut = st.usage - target + step_down;
          budget_.store(b > cut + floor ? b - cut : floor, std::memory_order_relaxed);
          shrink_.store(true, std::memory_order_relaxed);
        } else {
          budget_.store(std::min(limit_, b + step_up), std::memory_order_relaxed);
        }
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(poll_ms_));
    }
  }

  const int poll_ms_;
  std::atomic<std::uint64_t> budget_;
  std::atomic<bool> shrink_{false}, stop_{false};
  std::uint64_t limit_ = 0;
  dropalloc::os::memory_cgroup cg_;
  std::thread thread_;
};

}  // namespace pressure
