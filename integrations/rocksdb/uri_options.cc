#include "integrations/rocksdb/uri_options.h"

#include <string_view>

#include "allocator/os/options.h"

namespace dropalloc::rocks {

const char* to_string(budget_mode m) noexcept {
  switch (m) {
    case budget_mode::fixed: return "fixed";
    case budget_mode::kernel: return "kernel";
    case budget_mode::pressure: return "pressure";
  }
  return "?";
}

namespace {

constexpr std::string_view kScheme = "dropalloc://";

// Applies one name=value pair; "" or why it was refused.
std::string apply(std::string_view name, std::string_view value, secondary_cache_options* o,
                  bool* budget_given) {
  std::string v(value);
  if (name == "capacity") {
    std::size_t n = 0;
    if (v.empty() || !os::parse_size(v.data(), v.data() + v.size(), &n)) {
      return "capacity=" + v + ": expected a byte count with an optional k, M or G suffix";
    }
    o->capacity = n;
    return "";
  }
  if (name == "seal") {
    bool b = false;
    if (!os::parse_bool(v.c_str(), &b)) return "seal=" + v + ": expected 1 or 0 (true/false, yes/no, on/off)";
    o->seal = b;
    return "";
  }
  if (name == "budget") {
    *budget_given = true;
    if (v == "fixed") o->budget = budget_mode::fixed;
    else if (v == "kernel") o->budget = budget_mode::kernel;
    else if (v == "pressure") o->budget = budget_mode::pressure;
    else return "budget=" + v + ": expected fixed, kernel or pressure";
    return "";
  }
  if (name == "shards") {
    std::uint64_t n = 0;
    if (!os::parse_number(v.c_str(), 1024, &n) || n == 0) return "shards=" + v + ": expected 1 to 1024";
    o->shards = static_cast<unsigned>(n);
    return "";
  }
  return "unknown option '" + std::string(name) + "' (known: capacity, seal, budget, shards)";
}

}  // namespace

std::string parse_uri(const std::string& uri, secondary_cache_options* out) {
  if (uri.compare(0, kScheme.size(), kScheme) != 0) {
    return "'" + uri + "' does not start with " + std::string(kScheme);
  }
  secondary_cache_options o;
  bool budget_given = false;
  std::string_view rest = std::string_view(uri).substr(kScheme.size());
  while (!rest.empty()) {
    std::size_t end = rest.find(';');
    std::string_view pair = rest.substr(0, end);
    rest = end == std::string_view::npos ? std::string_view() : rest.substr(end + 1);
    if (pair.empty()) continue;  // "a=1;;b=2" and a trailing ';' are harmless
    std::size_t eq = pair.find('=');
    if (eq == std::string_view::npos) return "'" + std::string(pair) + "' in " + uri + ": expected name=value";
    std::string why = apply(pair.substr(0, eq), pair.substr(eq + 1), &o, &budget_given);
    if (!why.empty()) return why + " (in " + uri + ")";
  }
  if (!budget_given && o.capacity != 0) o.budget = budget_mode::fixed;
  if (o.budget == budget_mode::kernel && o.capacity != 0) {
    return "budget=kernel means no fixed capacity, but capacity=" + std::to_string(o.capacity) +
           " was given (in " + uri + "); use budget=fixed or budget=pressure with a capacity";
  }
  if (o.budget == budget_mode::fixed && o.capacity == 0) {
    return "budget=fixed needs capacity=N (in " + uri + "); without a capacity use budget=kernel";
  }
  *out = o;
  return "";
}

std::string to_uri(const secondary_cache_options& o) {
  return std::string(kScheme) + "capacity=" + std::to_string(o.capacity) + ";seal=" + (o.seal ? "1" : "0") +
         ";budget=" + to_string(o.budget) + ";shards=" + std::to_string(o.shards);
}

}  // namespace dropalloc::rocks
