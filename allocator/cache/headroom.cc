#include "allocator/cache/headroom.h"

#include <exception>
#include <stdexcept>
#include <utility>

namespace dropalloc {
namespace {

void validate(const headroom_target& t, const headroom_options& o) {
  std::string why = invalid_thresholds(o.thresholds);
  // Longer polls would overflow the clock arithmetic of a timed wait, which
  // then returns at once: a keeper meant to sleep would spin.
  if (why.empty() && (o.poll.count() <= 0 || o.poll > std::chrono::hours(24))) {
    why = "the poll interval must be > 0 and at most 24 h";
  }
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
      target_.cap(this, 0);  // lifts this keeper's cap; the owner's budget was never touched
    } catch (...) {
      // A destructor must not throw; the cap stays, which only keeps the cache smaller.
    }
  }
}

std::string headroom_keeper::last_error() const {
  std::lock_guard lock(mu_);
  return last_error_;
}

void headroom_keeper::note_error(const char* what) noexcept {
  errors_.fetch_add(1, std::memory_order_relaxed);
  std::lock_guard g(mu_);
  try {
    last_error_ = what;
  } catch (...) {
    last_error_.clear();  // no memory for the message: the count still says it
  }
}

void headroom_keeper::watch(pressure_monitor monitor) {
  std::unique_lock lock(mu_);
  while (!stop_) {
    lock.unlock();
    try {
      poll_once(monitor);
    } catch (const std::exception& e) {
      // A throwing shed (a cache's allocation failing, say) must not end the
      // process from this thread; the next poll tries again.
      note_error(e.what());
    } catch (...) {
      note_error("an exception that is not a std::exception");
    }
    lock.lock();
    wake_.wait_for(lock, options_.poll, [this] { return stop_; });
  }
}

void headroom_keeper::set_cap(std::uint64_t bytes) {
  capped_ = bytes != 0 || capped_;  // before the call: a cap() that applies and then throws is still lifted later
  target_.cap(this, bytes);
  if (bytes == 0) capped_ = false;
}

void headroom_keeper::poll_once(pressure_monitor& monitor) {
  pressure_reading r;
  bool read = monitor.read(&r);
  bool limited = r.source == pressure_source::cgroup_v1 || r.source == pressure_source::cgroup_v2;
  if (!read || (limited && r.limit == UINT64_MAX)) {
    // No limit to keep room under (the cgroup vanished, or its limit was
    // lifted): a cap set for the old limit must not outlive it.
    expected_.clear();
    if (capped_) set_cap(0);
    return;
  }
  if (limited && r.limits.empty()) r.limits.push_back({r.usage, r.limit});
  // What each limited cgroup grew by since just after the last shed is what a
  // neighbour (or the cache's refill) will likely take again before the next
  // poll, so the headroom is judged one poll ahead: a neighbour that ramps
  // fast then finds its pages free instead of waiting on reclaim. Each
  // cgroup's growth is judged against its own usage and limit.
  std::vector<std::uint64_t> now;
  now.reserve(r.limits.size());
  for (const auto& c : r.limits) now.push_back(c.usage);
  if (options_.look_ahead && expected_.size() == r.limits.size()) {
    for (std::size_t i = 0; i < r.limits.size(); ++i) {
      if (expected_[i] != 0 && now[i] > expected_[i]) r.limits[i].usage += now[i] - expected_[i];
    }
  }
  shed_request s = monitor.assess(r, options_.thresholds);
  if (s.bytes == 0 && s.fraction <= 0) {
    if (capped_) {
      // Room below every low watermark is the cache's to grow into.
      std::uint64_t room = UINT64_MAX;
      for (const auto& c : r.limits) {
        if (c.limit == UINT64_MAX) continue;
        auto low = static_cast<std::uint64_t>(static_cast<double>(c.limit) * options_.thresholds.low);
        std::uint64_t here = c.usage < low ? low - c.usage : 0;
        if (here < room) room = here;
      }
      if (room != 0 && room != UINT64_MAX) set_cap(target_.held() + room);
    }
    expected_ = std::move(now);
    return;
  }
  std::uint64_t freed = target_.shed(s);
  sheds_.fetch_add(1, std::memory_order_relaxed);
  bytes_shed_.fetch_add(freed, std::memory_order_relaxed);
  // Only a limit tells how far the cap may grow back, so only then cap.
  if (options_.cap && limited) set_cap(target_.held() + 1);  // 0 would lift the cap
  // Measure where the shed left each cgroup rather than assume every freed
  // byte left: pages still shared with kept values, or memory a neighbour
  // took meanwhile, would otherwise read as growth at the next poll, and
  // each shed would call for the next until the cache was empty.
  pressure_reading after;
  if (freed != 0 && monitor.read(&after) && after.limits.size() == now.size()) {
    for (std::size_t i = 0; i < now.size(); ++i) now[i] = after.limits[i].usage;
  }
  expected_ = std::move(now);
}

}  // namespace dropalloc
