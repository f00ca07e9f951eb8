// Memory cgroups (v1 and v2): find the process's own, make a child under it
// with a limit, move processes into it, read its usage and OOM kills.
//
// For tests, benchmarks and the cache layer's pressure awareness; it uses
// std::string and so must not be called from inside malloc.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace dropalloc::os {

struct memory_cgroup {
  int version = 0;   // 1 or 2; 0 when none was found
  std::string dir;   // e.g. /sys/fs/cgroup/memory/user.slice (v1)
  // Where the hierarchy is mounted (e.g. /sys/fs/cgroup/memory), a prefix of
  // dir. The cgroups between the two are dir's ancestors, whose limits apply
  // to dir's processes too. Empty when unknown: only dir itself is read.
  std::string root;
};

// Finds the calling process's memory cgroup from /proc/self/cgroup and
// /proc/self/mountinfo. On failure returns false and says why in *why.
bool find_memory_cgroup(memory_cgroup* out, std::string* why);

// The cgroup, then its parent, and so on up to the directory the hierarchy is
// mounted on (cg.root): a limit set on any of them (a systemd slice, a
// container's cgroup over the ones its runtime makes, or mounted as its root)
// applies to the processes in the first.
std::vector<memory_cgroup> cgroup_and_ancestors(const memory_cgroup& cg);

// Reads a counter file of a memory cgroup: v1 and v2 names are both accepted
// (usage: memory.usage_in_bytes / memory.current). Returns false if unreadable.
bool read_cgroup_u64(const std::string& file, std::uint64_t* value);

// Current usage, limit (UINT64_MAX when unlimited) and OOM kills of a cgroup.
struct cgroup_memory_state {
  std::uint64_t usage = 0;
  std::uint64_t limit = UINT64_MAX;
  std::uint64_t high = UINT64_MAX;  // v2 memory.high; UINT64_MAX on v1
  std::uint64_t oom_kills = 0;
  std::uint64_t throttle_events = 0;  // v2 memory.events "high" + "max"; 0 on v1
};
bool read_cgroup_state(const memory_cgroup& cg, cgroup_memory_state* out);

// Pressure stall information, the "some" line of /proc/pressure/memory:
// avg10 is the percent of the last 10 s some task waited for memory, total the
// microseconds waited since boot (what a poller differences for its own
// interval: avg10 stays high for seconds after the stall is over).
struct psi_some {
  double avg10 = 0;
  std::uint64_t total_us = 0;
};
bool read_psi_memory_some(psi_some* out);  // false without PSI
bool parse_psi_some(const std::string& text, psi_some* out);
bool parse_psi_some_avg10(const std::string& text, double* avg10);

// A child memory cgroup, made under the process's own and removed (rmdir) by
// the destructor once its processes have exited.
class child_cgroup {
 public:
  // Returns nullptr and says why (no cgroup found, not writable, controller not
  // delegated, ...) if the cgroup cannot be made.
  static std::unique_ptr<child_cgroup> create(const std::string& name, std::uint64_t limit_bytes,
                                              std::string* why);
  // Takes charge of a cgroup an earlier create() made and keep() left behind
  // (named by its directory). Refuses anything that is not a direct child of
  // the process's own memory cgroup, so it can never remove someone else's.
  static std::unique_ptr<child_cgroup> open_existing(const std::string& dir, std::string* why);
  ~child_cgroup();
  child_cgroup(const child_cgroup&) = delete;
  child_cgroup& operator=(const child_cgroup&) = delete;

  bool add_process(pid_t pid, std::string* why);
  bool set_limit(std::uint64_t limit_bytes, std::string* why);
  cgroup_memory_state state() const;
  const memory_cgroup& cgroup() const { return cg_; }
  // Sends SIGKILL to every process in the cgroup (processes of our own
  // making, in a cgroup made for them); returns how many were signalled.
  int kill_all();
  // Leaves the cgroup in place when this object goes (a tool that makes the
  // cgroup for a later process to use and remove).
  void keep() { keep_ = true; }
  // Removes the cgroup (rmdir): true once it is gone (the destructor then
  // has nothing left to do). Processes that exited may still be leaving it,
  // so it tries every 10 ms, `tries` times; with kill_first it sends SIGKILL
  // to what is still in it before each try.
  bool remove(int tries, bool kill_first);

 private:
  explicit child_cgroup(memory_cgroup cg) : cg_(std::move(cg)) {}
  memory_cgroup cg_;
  bool keep_ = false;
};

}  // namespace dropalloc::os
