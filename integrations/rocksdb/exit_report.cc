#include "integrations/rocksdb/exit_report.h"

#include <algorithm>
#include <cstdlib>
#include <iostream>
#include <mutex>
#include <vector>

#include "allocator/os/options.h"
#include "integrations/rocksdb/secondary_cache.h"

namespace dropalloc::rocks::exit_report {

namespace {

struct registry {
  std::mutex mu;
  std::vector<secondary_cache*> caches;
};

// Never destroyed: caches held by other statics may unregister after exit
// handlers and static destructors of this library have run.
registry& reg() {
  static registry* r = new registry;
  return *r;
}

void report_at_exit() {
  registry& r = reg();
  std::lock_guard lock(r.mu);
  if (os::option_stats() != os::stats_level::off) {
    for (secondary_cache* c : r.caches) c->print_stats(std::cerr);
  }
  r.caches.clear();
}

}  // namespace

void add(secondary_cache* c) {
  registry& r = reg();
  std::lock_guard lock(r.mu);
  static bool registered = std::atexit(report_at_exit) == 0;
  (void)registered;
  r.caches.push_back(c);
}

bool remove(secondary_cache* c) {
  registry& r = reg();
  std::lock_guard lock(r.mu);
  auto it = std::find(r.caches.begin(), r.caches.end(), c);
  if (it == r.caches.end()) return false;
  r.caches.erase(it);
  return true;
}

}  // namespace dropalloc::rocks::exit_report
