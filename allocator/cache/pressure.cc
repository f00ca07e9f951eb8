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
  os::cgroup_memory_state st;
  // A cgroup only helps when something limits it: otherwise usage has no scale.
  if (cg_.version != 0 && os::read_cgroup_state(cg_, &st) &&
      (st.limit != UINT64_MAX || st.high != UINT64_MAX)) {
    source_ = cg_.version == 1 ? pressure_source::cgroup_v1 : pressure_source::cgroup_v2;
    description_ += std::string(to_string(source_)) + " at " + cg_.dir;
    return;
  }
  double avg10;
  if (os::read_psi_memory_some_avg10(&avg10)) {
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
    os::cgroup_memory_state st;
    if (!os::read_cgroup_state(cg_, &st)) return false;
    out->usage = st.usage;
    out->limit = st.limit < st.high ? st.limit : st.high;
    out->throttle_events = st.throttle_events;
    return true;
  }
  if (source_ == pressure_source::psi) {
    return os::read_psi_memory_some_avg10(&out->psi_some_avg10);
  }
  return false;
}

shed_request pressure_monitor::assess(const pressure_reading& r, const pressure_thresholds& t) {
  shed_request s;
  if (r.source == pressure_source::cgroup_v1 || r.source == pressure_source::cgroup_v2) {
    auto high = static_cast<std::uint64_t>(static_cast<double>(r.limit) * t.high);
    auto low = static_cast<std::uint64_t>(static_cast<double>(r.limit) * t.low);
    if (r.limit != UINT64_MAX && r.usage > high) s.bytes = r.usage - low;
    // New memory.high/max events mean the kernel is already reclaiming.
    if (have_events_ && r.throttle_events > last_events_) s.fraction = t.psi_fraction;
    last_events_ = r.throttle_events;
    have_events_ = true;
  } else if (r.source == pressure_source::psi && r.psi_some_avg10 >= t.psi_avg10) {
    s.fraction = t.psi_fraction;
  }
  return s;
}

}  // namespace dropalloc
