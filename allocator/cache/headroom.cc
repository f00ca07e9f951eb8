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
  while (!stop_.load(std::memory_order_relaxed)) {
    pressure_reading r;
    if (monitor.read(&r)) {
      shed_request s = monitor.assess(r, options_.thresholds);
      if (s.bytes != 0 || s.fraction > 0) {
        std::uint64_t freed = shed_(s);
        sheds_.fetch_add(1, std::memory_order_relaxed);
        bytes_shed_.fetch_add(freed, std::memory_order_relaxed);
      }
    }
    std::this_thread::sleep_for(options_.poll);
  }
}

}  // namespace dropalloc
