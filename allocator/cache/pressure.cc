#include "allocator/cache/pressure.h"

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>

namespace dropalloc {
namespace {

bool slurp(const std::string& path, std::string* out) {
  std::ifstream in(path);
  if (!in) return false;
  std::stringstream ss;
  ss << in.rdbuf();
  *out = ss.str();
  return true;
}

std::uint64_t keyed(const std::string& text, const std::string& key) {
  std::istringstream in(text);
  std::string k;
  std::uint64_t v;
  while (in >> k >> v) {
    if (k == key) return v;
  }
  return 0;
}

}  // namespace

const char* to_string(pressure_source s) noexcept {
  switch (s) {
    case pressure_source::none: return "none";
    case pressure_source::cgroup_v1: return "cgroup v1";
    case pressure_source::cgroup_v2: return "cgroup v2";
    case pressure_source::psi: return "psi";
  }
  return "?";
}

bool parse_psi_some_avg10(const std::string& text, double* avg10) {
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("some ", 0) != 0) continue;
    auto at = line.find("avg10=");
    if (at == std::string::npos) return false;
    char* end = nullptr;
    double v = std::strtod(line.c_str() + at + 6, &end);
    if (end == line.c_str() + at + 6) return false;
    *avg10 = v;
    return true;
  }
  return false;
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
  std::string text;
  double avg10;
  if (slurp("/proc/pressure/memory", &text) && parse_psi_some_avg10(text, &avg10)) {
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
    if (source_ == pressure_source::cgroup_v2) {
      std::string text;
      if (slurp(cg_.dir + "/memory.events", &text)) {
        out->throttle_events = keyed(text, "high") + keyed(text, "max");
      }
    }
    return true;
  }
  if (source_ == pressure_source::psi) {
    std::string text;
    return slurp("/proc/pressure/memory", &text) && parse_psi_some_avg10(text, &out->psi_some_avg10);
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
