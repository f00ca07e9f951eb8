#include "allocator/cache/pressure.h"

namespace dropalloc {

const char* to_string(pressure_source s) noexcept {
  switch (s) {
    case pressure_source::none: return "none";
    case pressure_source::cgroup_v1: return "cgroup v1";
    case pressure_source::cgroup_v2: return "cgroup v2";
    case pressure_source::psi: return "psi";
  }
  return "?";
}

std::string invalid_thresholds(const pressure_thresholds& t) {
  // Written so that NaN fails every test.
  if (!(t.low > 0 && t.low <= t.high && t.high <= 1)) {
    return "the watermarks must satisfy 0 < low <= high <= 1 (got low " + std::to_string(t.low) + ", high " +
           std::to_string(t.high) + ")";
  }
  // 0 would count "no stall at all" as pressure and shed on every poll.
  if (!(t.psi_avg10 > 0)) return "psi_avg10 must be > 0 (got " + std::to_string(t.psi_avg10) + ")";
  if (!(t.psi_fraction >= 0 && t.psi_fraction <= 1)) {
    return "psi_fraction must be within [0, 1] (got " + std::to_string(t.psi_fraction) + ")";
  }
  return {};
}

pressure_monitor::pressure_monitor() {
  std::string why;
  if (!os::find_memory_cgroup(&cg_, &why)) {
    cg_ = {};
    description_ = why + "; ";
  }
  choose_source();
}

pressure_monitor::pressure_monitor(os::memory_cgroup cg) : cg_(std::move(cg)) { choose_source(); }

void pressure_monitor::choose_source() {
  // A cgroup only helps when something limits it: otherwise usage has no
  // scale. The limit may sit on an ancestor (a slice, a container's cgroup).
  if (cg_.version != 0) {
    for (const auto& c : os::cgroup_and_ancestors(cg_)) {
      os::cgroup_memory_state st;
      if (os::read_cgroup_state(c, &st) && (st.limit != UINT64_MAX || st.high != UINT64_MAX)) limited_.push_back(c);
    }
  }
  if (!limited_.empty()) {
    source_ = cg_.version == 1 ? pressure_source::cgroup_v1 : pressure_source::cgroup_v2;
    description_ += std::string(to_string(source_)) + " at " + limited_.front().dir;
    if (limited_.front().dir != cg_.dir) description_ += " (an ancestor of " + cg_.dir + ")";
    return;
  }
  os::psi_some psi;
  if (os::read_psi_memory_some(&psi)) {
    source_ = pressure_source::psi;
    description_ += "psi (/proc/pressure/memory)";
    return;
  }
  source_ = pressure_source::none;
  description_ += "no limited cgroup and no PSI: no pressure signal";
}

bool pressure_monitor::read(pressure_reading* out) {
  out->source = source_;
  if (source_ == pressure_source::cgroup_v1 || source_ == pressure_source::cgroup_v2) {
    // Every limit that applies, in the monitor's order; a cgroup that cannot
    // be read (it vanished) or lost its limit stays in place with no limit,
    // so the order does not shift under a caller comparing polls.
    out->limits.assign(limited_.size(), cgroup_usage{});
    out->throttle_events = 0;
    bool any = false;
    double fullest = -1;
    for (std::size_t i = 0; i < limited_.size(); ++i) {
      os::cgroup_memory_state st;
      if (!os::read_cgroup_state(limited_[i], &st)) continue;
      std::uint64_t limit = st.limit < st.high ? st.limit : st.high;
      out->throttle_events += st.throttle_events;
      if (limit == UINT64_MAX) continue;
      out->limits[i] = {st.usage, limit};
      // A limit of 0 is full from the first byte.
      double share = limit == 0 ? 1e300 : static_cast<double>(st.usage) / static_cast<double>(limit);
      if (share > fullest) {
        fullest = share;
        out->usage = st.usage;
        out->limit = limit;
        any = true;
      }
    }
    return any;
  }
  if (source_ == pressure_source::psi) {
    os::psi_some psi;
    if (!os::read_psi_memory_some(&psi)) return false;
    auto now = std::chrono::steady_clock::now();
    out->psi_some_avg10 = psi.avg10;
    out->psi_stall_percent = -1;
    if (psi.total_us != 0) {
      auto us = std::chrono::duration_cast<std::chrono::microseconds>(now - last_psi_read_).count();
      if (have_psi_total_ && us > 0 && psi.total_us >= last_psi_total_us_) {
        out->psi_stall_percent = 100.0 * static_cast<double>(psi.total_us - last_psi_total_us_) / static_cast<double>(us);
      }
      last_psi_total_us_ = psi.total_us;
      last_psi_read_ = now;
      have_psi_total_ = true;
    }
    return true;
  }
  return false;
}

shed_request pressure_monitor::assess(const pressure_reading& r, const pressure_thresholds& t) {
  shed_request s;
  if (r.source == pressure_source::cgroup_v1 || r.source == pressure_source::cgroup_v2) {
    // Each limit above its high watermark asks to come down to its low one;
    // shedding the most any of them asks serves them all.
    auto judge = [&](const cgroup_usage& c) {
      if (c.limit == UINT64_MAX) return;
      auto high = static_cast<std::uint64_t>(static_cast<double>(c.limit) * t.high);
      auto low = static_cast<std::uint64_t>(static_cast<double>(c.limit) * t.low);
      if (c.usage > high && c.usage - low > s.bytes) s.bytes = c.usage - low;
    };
    if (r.limits.empty()) {
      judge({r.usage, r.limit});
    } else {
      for (const auto& c : r.limits) judge(c);
    }
    // New memory.high/max events mean the kernel is already reclaiming.
    if (have_events_ && r.throttle_events > last_events_) s.fraction = t.psi_fraction;
    last_events_ = r.throttle_events;
    have_events_ = true;
  } else if (r.source == pressure_source::psi) {
    if (r.psi_stall_percent >= 0) {
      // Stalls since the previous read: a shed that helped shows at once.
      if (r.psi_stall_percent >= t.psi_avg10) s.fraction = t.psi_fraction;
    } else if (r.psi_some_avg10 >= t.psi_avg10) {
      // Only the 10 s average: it stays high for seconds after the stall
      // ended, so acting on every poll would empty the cache.
      auto now = std::chrono::steady_clock::now();
      if (!have_avg10_shed_ || now - last_avg10_shed_ >= std::chrono::seconds(10)) {
        s.fraction = t.psi_fraction;
        last_avg10_shed_ = now;
        have_avg10_shed_ = true;
      }
    }
  }
  if (!(s.fraction >= 0 && s.fraction <= 1)) s.fraction = 0;  // thresholds not validated by the caller
  return s;
}

}  // namespace dropalloc
