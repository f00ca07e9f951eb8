#include "allocator/cache/headroom.h"

#include <utility>

namespace dropalloc {

headroom_keeper::headroom_keeper(shed_fn shed, const headroom_options& o)
    : headroom_keeper(pressure_monitor(), std::move(shed), o) {}

headroom_keeper::headroom_keeper(pressure_monitor monitor, shed_fn shed, const headroom_options& o)
    : shed_(std::move(shed)), options_(o), description_(monitor.description()) {
  thread_ = std::thread([this, m = std::move(monitor)]() mutable { watch(std::move(m)); });
}

headroom_keeper::~headroom_keeper() {
  stop_.store(true, std::memory_order_relaxed);
  thread_.join();
}

void headroom_keeper::watch(pressure_monitor monitor) {
  // Usage expected after the last poll's shed: what the cgroup grew by since
  // is what a neighbour (or the cache's refill) will likely take again before
  // the next poll, so the headroom is judged one poll ahead. A neighbour that
  // ramps fast then finds its pages free instead of waiting on reclaim.
  std::uint64_t expected = 0;
  while (!stop_.load(std::memory_order_relaxed)) {
    pressure_reading r;
    if (monitor.read(&r)) {
      std::uint64_t now = r.usage;
      if (options_.look_ahead && expected != 0 && now > expected) r.usage += now - expected;
      shed_request s = monitor.assess(r, options_.thresholds);
      std::uint64_t freed = 0;
      if (s.bytes != 0 || s.fraction > 0) {
        freed = shed_(s);
        sheds_.fetch_add(1, std::memory_order_relaxed);
        bytes_shed_.fetch_add(freed, std::memory_order_relaxed);
      }
      expected = now > freed ? now - freed : 0;
    }
    std::this_thread::sleep_for(options_.poll);
  }
}

}  // namespace dropalloc
