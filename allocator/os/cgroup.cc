#include "allocator/os/cgroup.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <vector>

namespace dropalloc::os {
namespace {

bool read_file(const std::string& path, std::string* out) {
  std::ifstream in(path);
  if (!in) return false;
  std::stringstream ss;
  ss << in.rdbuf();
  *out = ss.str();
  return true;
}

bool write_file(const std::string& path, const std::string& value, std::string* why) {
  int fd = open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) {
    if (why) *why = "cannot open " + path + ": " + strerror(errno);
    return false;
  }
  ssize_t n = write(fd, value.data(), value.size());
  int err = errno;
  close(fd);
  if (n != static_cast<ssize_t>(value.size())) {
    if (why) *why = "cannot write '" + value + "' to " + path + ": " + strerror(err);
    return false;
  }
  return true;
}

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> parts;
  std::string cur;
  for (char c : s) {
    if (c == sep) {
      parts.push_back(cur);
      cur.clear();
    } else {
      cur += c;
    }
  }
  parts.push_back(cur);
  return parts;
}

// Value of "key N" in a flat keyed file (memory.events, memory.oom_control).
std::uint64_t keyed_value(const std::string& text, const std::string& key) {
  std::istringstream in(text);
  std::string k;
  std::uint64_t v;
  while (in >> k >> v) {
    if (k == key) return v;
  }
  return 0;
}

struct mount_point {
  std::string root;  // the cgroup path mounted there (field 4 of mountinfo)
  std::string dir;
};

}  // namespace

bool read_cgroup_u64(const std::string& file, std::uint64_t* value) {
  std::string text;
  if (!read_file(file, &text)) return false;
  if (text.rfind("max", 0) == 0) {
    *value = UINT64_MAX;
    return true;
  }
  // strtoull would take "-5" for a huge number; the kernel writes digits.
  if (text.empty() || text[0] < '0' || text[0] > '9') return false;
  char* end = nullptr;
  unsigned long long v = strtoull(text.c_str(), &end, 10);
  if (end == text.c_str()) return false;
  // cgroup v1 reports "unlimited" as a huge page-rounded number.
  *value = v >= (1ull << 62) ? UINT64_MAX : v;
  return true;
}

bool find_memory_cgroup(memory_cgroup* out, std::string* why) {
  std::string cgroups, mounts;
  if (!read_file("/proc/self/cgroup", &cgroups)) {
    *why = "cannot read /proc/self/cgroup";
    return false;
  }
  if (!read_file("/proc/self/mountinfo", &mounts)) {
    *why = "cannot read /proc/self/mountinfo";
    return false;
  }
  mount_point v1, v2;
  std::istringstream ms(mounts);
  for (std::string line; std::getline(ms, line);) {
    auto dash = line.find(" - ");
    if (dash == std::string::npos) continue;
    std::istringstream left(line.substr(0, dash)), right(line.substr(dash + 3));
    std::string id, parent, devno, root, dir, fstype, source, options;
    left >> id >> parent >> devno >> root >> dir;
    right >> fstype >> source >> options;
    if (fstype == "cgroup") {
      for (const auto& opt : split(options, ',')) {
        if (opt == "memory") v1 = {root, dir};
      }
    } else if (fstype == "cgroup2") {
      v2 = {root, dir};
    }
  }
  auto under = [](const mount_point& m, const std::string& path) {
    std::string rel = path;
    if (m.root != "/" && rel.rfind(m.root, 0) == 0) rel = rel.substr(m.root.size());
    return m.dir + (rel == "/" ? "" : rel);
  };
  std::istringstream cs(cgroups);
  std::string v2_path;
  for (std::string line; std::getline(cs, line);) {
    auto parts = split(line, ':');
    if (parts.size() < 3) continue;
    std::string path = line.substr(parts[0].size() + parts[1].size() + 2);
    if (parts[0] == "0" && parts[1].empty()) v2_path = path;
    for (const auto& c : split(parts[1], ',')) {
      if (c == "memory" && !v1.dir.empty()) {
        out->version = 1;
        out->dir = under(v1, path);
        out->root = v1.dir;
        return true;
      }
    }
  }
  if (!v2_path.empty() && !v2.dir.empty()) {
    std::string dir = under(v2, v2_path);
    std::string controllers;
    if (read_file(dir + "/cgroup.controllers", &controllers) &&
        controllers.find("memory") != std::string::npos) {
      out->version = 2;
      out->dir = dir;
      out->root = v2.dir;
      return true;
    }
    *why = "cgroup v2 at " + dir + " has no memory controller";
    return false;
  }
  *why = "no memory cgroup controller is mounted";
  return false;
}

bool read_cgroup_state(const memory_cgroup& cg, cgroup_memory_state* out) {
  std::string text;
  if (cg.version == 1) {
    if (!read_cgroup_u64(cg.dir + "/memory.usage_in_bytes", &out->usage)) return false;
    read_cgroup_u64(cg.dir + "/memory.limit_in_bytes", &out->limit);
    if (read_file(cg.dir + "/memory.oom_control", &text)) out->oom_kills = keyed_value(text, "oom_kill");
    return true;
  }
  if (cg.version == 2) {
    if (!read_cgroup_u64(cg.dir + "/memory.current", &out->usage)) return false;
    read_cgroup_u64(cg.dir + "/memory.max", &out->limit);
    read_cgroup_u64(cg.dir + "/memory.high", &out->high);
    if (read_file(cg.dir + "/memory.events", &text)) {
      out->oom_kills = keyed_value(text, "oom_kill");
      out->throttle_events = keyed_value(text, "high") + keyed_value(text, "max");
    }
    return true;
  }
  return false;
}

std::vector<memory_cgroup> cgroup_and_ancestors(const memory_cgroup& cg) {
  std::vector<memory_cgroup> chain{cg};
  if (cg.root.empty() || cg.dir.rfind(cg.root, 0) != 0) return chain;
  std::string dir = cg.dir;
  for (;;) {
    auto slash = dir.rfind('/');
    if (slash == std::string::npos || slash < cg.root.size()) break;
    dir.resize(slash);
    if (dir.size() < cg.root.size()) break;
    // The mount directory itself is included: a container runtime may mount
    // the container's own cgroup there, limit and all. (At the hierarchy's
    // true root there is no limit to read: v1 reports it unlimited, v2 has no
    // memory.max.)
    chain.push_back({cg.version, dir, cg.root});
    if (dir.size() == cg.root.size()) break;
  }
  return chain;
}

bool parse_psi_some(const std::string& text, psi_some* out) {
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("some ", 0) != 0) continue;
    auto avg = line.find("avg10=");
    auto total = line.find("total=");
    if (avg == std::string::npos) return false;
    char* end = nullptr;
    double v = std::strtod(line.c_str() + avg + 6, &end);
    if (end == line.c_str() + avg + 6) return false;
    out->avg10 = v;
    out->total_us = total == std::string::npos ? 0 : std::strtoull(line.c_str() + total + 6, nullptr, 10);
    return true;
  }
  return false;
}

bool parse_psi_some_avg10(const std::string& text, double* avg10) {
  psi_some s;
  if (!parse_psi_some(text, &s)) return false;
  *avg10 = s.avg10;
  return true;
}

bool read_psi_memory_some(psi_some* out) {
  std::string text;
  return read_file("/proc/pressure/memory", &text) && parse_psi_some(text, out);
}

std::unique_ptr<child_cgroup> child_cgroup::create(const std::string& name, std::uint64_t limit_bytes,
                                                   std::string* why) {
  memory_cgroup parent;
  if (!find_memory_cgroup(&parent, why)) return nullptr;
  if (parent.version == 2) {
    // The memory controller must be enabled for the children of our cgroup.
    std::string enabled;
    read_file(parent.dir + "/cgroup.subtree_control", &enabled);
    if (enabled.find("memory") == std::string::npos &&
        !write_file(parent.dir + "/cgroup.subtree_control", "+memory", why)) {
      return nullptr;
    }
  }
  memory_cgroup cg{parent.version, parent.dir + "/" + name, parent.root};
  if (mkdir(cg.dir.c_str(), 0755) != 0 && errno != EEXIST) {
    *why = "cannot make " + cg.dir + ": " + strerror(errno);
    return nullptr;
  }
  std::unique_ptr<child_cgroup> child(new child_cgroup(cg));
  if (!child->set_limit(limit_bytes, why)) return nullptr;  // destructor removes the directory
  return child;
}

std::unique_ptr<child_cgroup> child_cgroup::open_existing(const std::string& dir, std::string* why) {
  memory_cgroup parent;
  if (!find_memory_cgroup(&parent, why)) return nullptr;
  const std::string prefix = parent.dir + "/";
  if (dir.rfind(prefix, 0) != 0 || dir.size() == prefix.size() ||
      dir.find('/', prefix.size()) != std::string::npos || dir.find("..") != std::string::npos) {
    *why = dir + " is not a child of this process's memory cgroup " + parent.dir;
    return nullptr;
  }
  struct stat st;
  if (stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    *why = "no cgroup at " + dir;
    return nullptr;
  }
  return std::unique_ptr<child_cgroup>(new child_cgroup(memory_cgroup{parent.version, dir, parent.root}));
}

int child_cgroup::kill_all() {
  std::string procs;
  if (!read_file(cg_.dir + "/cgroup.procs", &procs)) return 0;
  int signalled = 0;
  std::istringstream in(procs);
  for (long pid; in >> pid;) {
    if (pid > 0 && pid != getpid() && kill(static_cast<pid_t>(pid), SIGKILL) == 0) ++signalled;
  }
  return signalled;
}

bool child_cgroup::remove(int tries, bool kill_first) {
  for (int i = 0; i < tries; ++i) {
    if (i != 0) usleep(10000);
    if (kill_first) kill_all();
    if (rmdir(cg_.dir.c_str()) == 0 || errno == ENOENT) {
      keep_ = true;  // nothing left for the destructor
      return true;
    }
  }
  return false;
}

bool child_cgroup::set_limit(std::uint64_t limit_bytes, std::string* why) {
  std::string file = cg_.version == 1 ? "/memory.limit_in_bytes" : "/memory.max";
  return write_file(cg_.dir + file, std::to_string(limit_bytes), why);
}

bool child_cgroup::add_process(pid_t pid, std::string* why) {
  return write_file(cg_.dir + "/cgroup.procs", std::to_string(pid), why);
}

cgroup_memory_state child_cgroup::state() const {
  cgroup_memory_state s;
  read_cgroup_state(cg_, &s);
  return s;
}

child_cgroup::~child_cgroup() {
  if (keep_) return;
  if (!remove(200, false)) {  // about 2 s
    fprintf(stderr, "dropalloc: could not remove cgroup %s: %s\n", cg_.dir.c_str(), strerror(errno));
  }
}

}  // namespace dropalloc::os
