// A neighbour in the same memory cgroup: a forked process that keeps taking
// and giving back ordinary (non-droppable) memory, so the kernel has to find
// room for it by dropping our pages, as it would for any co-tenant.
#pragma once

#include <sys/types.h>

#include <cstddef>

namespace dropalloc::truth {

class cotenant {
 public:
  // Forks the neighbour (it joins our cgroup, since children inherit it).
  // hold_bytes: ordinary memory it keeps; 0 starts nothing.
  explicit cotenant(std::size_t hold_bytes);
  ~cotenant() { stop(); }
  cotenant(const cotenant&) = delete;
  cotenant& operator=(const cotenant&) = delete;

  // Kills and reaps it. Returns false if it had already died (OOM-killed).
  bool stop();
  bool started() const { return pid_ > 0; }

 private:
  pid_t pid_ = -1;
};

}  // namespace dropalloc::truth
