#include "allocator/cache/headroom.h"

#include <exception>
#include <stdexcept>
#include <utility>

namespace dropalloc {
namespace {

void validate(const headroom_target& t, const headroom_options& o) {
  std::string why = invalid_thresholds(o.thresholds);
  if (why.empty() && o.poll.count() <= 0) why = "the poll interval must be > 0";
  if (why.empty() && !t.shed) why = "the target has no shed function";
  if (why.empty() && o.cap && (!t.cap || !t.held)) why = "cap is on but the target has no cap or held function";
  if (!why.empty()) throw std::invalid_argument("dropalloc::headroom_keeper: " + why);
}

}  // namespace

headroom_keeper::headroom_keeper(headroom_target target, const headroom_options& o)
    : headroom_keeper(pressure_monitor(), std::move(target), o) {}

headroom_keeper::headroom_keeper(pressure_monitor monitor, headroom_target target, const headroom_options& o)
    : target_(std::move(target)), options_(o), description_(monitor.description()) {
  validate(target_, options_);
  thread_ = std::thread([this, m = std::move(monitor)]() mutable { watch(std::move(m)); });
}

headroom_keeper::~headroom_keeper() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  wake_.notify_all();
  thread_.join();
  if (capped_) {
    try {
      target_.cap(0);  // lifts this keeper's cap; the owner's budget was never touched
    } catch (...) {
      // A destructor must not throw; the cap stays, which only keeps the cache smaller.
    }
  }
}

std::string headroom_keeper::last_error() const {
  std::lock_guard lock(mu_);
  return last_error_;
}

void headroom_keeper::watch(pressure_monitor monitor) {
  std::uint64_t expected = 0;
  std::unique_lock lock(mu_);
  while (!stop_) {
    lock.unlock();
    try {
      expected = poll_once(monitor, expected);
    } catch (const std::exception& e) {
      // A throwing shed (a cache's allocation failing, say) must not end the
      // process from this thread; the next poll tries again.
      errors_.fetch_add(1, std::memory_order_relaxed);
      std::lock_guard g(mu_);
      last_error_ = e.what();
    } catch (...) {
      errors_.fetch_add(1, std::memory_order_relaxed);
      std::lock_guard g(mu_);
      last_error_ = "an exception that is not a std::exception";
    }
    lock.lock();
    wake_.wait_for(lock, options_.poll, [this] { return stop_; });
  }
}

// One poll; returns the usage to judge the next poll's growth against.
std::uint64_t headroom_keeper::poll_once(pressure_monitor& monitor, std::uint64_t expected) {
  pressure_reading r;
  if (!monitor.read(&r)) return 0;
  const std::uint64_t now = r.usage;
  // What the cgroup grew by since just after the last shed is what a
  // neighbour (or the cache's refill) will likely take again before the next
  // poll, so the headroom is judged one poll ahead: a neighbour that ramps
  // fast then finds its pages free instead of waiting on reclaim.
  if (options_.look_ahead && expected != 0 && now > expected) r.usage += now - expected;
  shed_request s = monitor.assess(r, options_.thresholds);
  if (s.bytes == 0 && s.fraction <= 0) {
    if (capped_ && r.limit != UINT64_MAX) {
      // Room below the low watermark is the cache's to grow into.
      auto low = static_cast<std::uint64_t>(static_cast<double>(r.limit) * options_.thresholds.low);
      if (r.usage < low) target_.cap(target_.held() + (low - r.usage));
    }
    return now;
  }
  std::uint64_t freed = target_.shed(s);
  sheds_.fetch_add(1, std::memory_order_relaxed);
  bytes_shed_.fetch_add(freed, std::memory_order_relaxed);
  if (options_.cap && r.limit != UINT64_MAX) {
    target_.cap(target_.held() + 1);  // 0 would lift the cap
    capped_ = true;
  }
  // Measure where the shed left the cgroup rather than assume every freed
  // byte left it: pages still shared with kept values, or memory a neighbour
  // took meanwhile, would otherwise read as growth at the next poll, and
  // each shed would call for the next until the cache was empty.
  pressure_reading after;
  if (freed != 0 && monitor.read(&after)) return after.usage;
  return now;
}

}  // namespace dropalloc
