#include "allocator/cache/headroom.h"

#include <utility>

namespace dropalloc {

headroom_keeper::headroom_keeper(headroom_target target, const headroom_options& o)
    : headroom_keeper(pressure_monitor(), std::move(target), o) {}

headroom_keeper::headroom_keeper(pressure_monitor monitor, headroom_target target, const headroom_options& o)
    : target_(std::move(target)), options_(o), description_(monitor.description()) {
  thread_ = std::thread([this, m = std::move(monitor)]() mutable { watch(std::move(m)); });
}

headroom_keeper::~headroom_keeper() {
  stop_.store(true, std::memory_order_relaxed);
  thread_.join();
  if (capped_) target_.cap(0);  // the cache is the caller's again, uncapped
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
        freed = target_.shed(s);
        sheds_.fetch_add(1, std::memory_order_relaxed);
        bytes_shed_.fetch_add(freed, std::memory_order_relaxed);
        if (options_.cap && r.limit != UINT64_MAX) {
          target_.cap(target_.held() + 1);  // 0 would mean no cap
          capped_ = true;
        }
      } else if (capped_ && r.limit != UINT64_MAX) {
        // Room below the low watermark is the cache's to grow into.
        auto low = static_cast<std::uint64_t>(static_cast<double>(r.limit) * options_.thresholds.low);
        if (r.usage < low) target_.cap(target_.held() + (low - r.usage));
      }
      expected = now > freed ? now - freed : 0;
    }
    std::this_thread::sleep_for(options_.poll);
  }
}

}  // namespace dropalloc
