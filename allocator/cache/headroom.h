// Headroom: a cache that is a good neighbour sheds its own coldest values
// while its memory cgroup still has room, so that a co-tenant's next pages
// come from free memory instead of waiting on the kernel's reclaim.
//
// Without it, droppable values fill the cgroup to its limit (the kernel drops
// sealed pages only when it must), and every page anyone else in the cgroup
// asks for is first reclaimed from the cache: correct, but the neighbour
// stalls on it. With it, a thread polls the pressure signal and, above the
// high watermark, sheds down to the low one and hands the pages back at once.
// The kernel's dropping stays the safety net for what a poll is too slow for.
//
//   dropalloc::cache<std::string> c;
//   dropalloc::headroom_keeper keeper(dropalloc::shed_coldest(c));   // until keeper is destroyed
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "allocator/cache/pressure.h"

namespace dropalloc {

struct headroom_options {
  // Shed above 95% of the limit, down to 90%: 5-10% of the limit stays free
  // for a neighbour. The cost is the cache's share of that room; at 97/93%
  // a 100 ms spike waited on reclaim again (bench/pressure.py, spike).
  pressure_thresholds thresholds{0.95, 0.90, 10.0, 0.05};
  std::chrono::milliseconds poll{10};  // > 0 and at most a day
  // Judge the headroom one poll ahead: add what the cgroup grew by since just
  // after the last poll's shed (read again once the shed is done, so bytes
  // that did not leave the cgroup are not taken for growth).
  bool look_ahead = true;
  // After a shed, cap the cache at what it kept, and raise the cap only as
  // far as the low watermark allows, so it does not refill the room it gave
  // up before the next poll. The cap never exceeds the owner's own budget,
  // and the keeper lifts its cap when destroyed. Off by default: measured
  // both ways (bench/pressure.py, dropalloc-neighbour against -uncapped) it
  // cost hit rate and did not shorten the neighbour's wait in a way that held
  // across runs.
  bool cap = false;
};

// What a keeper acts on: a cache's values.
struct headroom_target {
  // Frees about what the request asks for; returns the bytes freed.
  std::function<std::uint64_t(const shed_request&)> shed;
  // Caps what the values may hold from now on, under whatever limit the
  // cache's owner set; `who` names the capper (each keeper passes itself), 0
  // bytes lifts its cap. Needed only with headroom_options::cap.
  std::function<void(const void* who, std::uint64_t bytes)> cap;
  // What the values hold now. Needed only with headroom_options::cap.
  std::function<std::uint64_t()> held;
};

class headroom_keeper {
 public:
  // Watches the calling process's memory cgroup (or PSI; see pressure_monitor).
  // Throws std::invalid_argument, saying what is wrong, for options that make
  // no sense (watermarks outside (0, 1], low above high, a negative PSI
  // fraction, a poll of 0) or a target without the functions they need.
  explicit headroom_keeper(headroom_target target, const headroom_options& o = {});
  headroom_keeper(pressure_monitor monitor, headroom_target target, const headroom_options& o = {});
  // Returns within about one shed, whatever the poll interval.
  ~headroom_keeper();
  headroom_keeper(const headroom_keeper&) = delete;
  headroom_keeper& operator=(const headroom_keeper&) = delete;

  std::uint64_t sheds() const noexcept { return sheds_.load(std::memory_order_relaxed); }
  std::uint64_t bytes_shed() const noexcept { return bytes_shed_.load(std::memory_order_relaxed); }
  const std::string& description() const noexcept { return description_; }
  // Polls that ended in an exception from the target or the monitor (the
  // keeper goes on polling), and the last one's what().
  std::uint64_t errors() const noexcept { return errors_.load(std::memory_order_relaxed); }
  std::string last_error() const;

 private:
  void watch(pressure_monitor monitor);
  void poll_once(pressure_monitor& monitor);
  void set_cap(std::uint64_t bytes);
  void note_error(const char* what) noexcept;

  headroom_target target_;
  headroom_options options_;
  std::string description_;
  std::atomic<std::uint64_t> sheds_{0}, bytes_shed_{0}, errors_{0};
  // The keeper's thread only, then the destructor after join:
  bool capped_ = false;
  // Usage of each limit (pressure_reading::limits) just after the last poll's
  // shed, or at the last poll: what the next poll's growth is measured from.
  std::vector<std::uint64_t> expected_;
  mutable std::mutex mu_;  // guards stop_ and last_error_
  std::condition_variable wake_;
  bool stop_ = false;
  std::string last_error_;
  std::thread thread_;
};

// The target for a dropalloc::cache: evicts its least valuable entries and
// trims its resource, so the freed pages leave the cgroup now rather than at
// the next decay; caps it with a pressure cap of its own (cache::set_pressure_cap),
// which leaves the owner's byte budget alone.
template <class Cache>
headroom_target shed_coldest(Cache& c) {
  headroom_target t;
  t.shed = [&c](const shed_request& r) -> std::uint64_t {
    std::uint64_t want = r.bytes;
    if (r.fraction > 0) want += static_cast<std::uint64_t>(static_cast<double>(c.bytes_live()) * r.fraction);
    std::uint64_t freed = want != 0 ? c.shed_at_least(want) : 0;
    if (freed != 0) c.resource().trim();
    return freed;
  };
  t.cap = [&c](const void* who, std::uint64_t bytes) { c.set_pressure_cap(who, bytes); };
  t.held = [&c] { return c.bytes_live(); };
  return t;
}

}  // namespace dropalloc
