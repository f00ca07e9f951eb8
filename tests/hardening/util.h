// Helpers shared by the hardening tests: /proc/self/smaps queries and stderr
// capture. Test-only; everything here may allocate.
#pragma once

#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>

namespace hardening {

// The smaps record (header line plus fields) of the mapping containing p.
inline std::string smaps_record(const void* p) {
  std::ifstream smaps("/proc/self/smaps");
  auto addr = reinterpret_cast<std::uintptr_t>(p);
  bool inside = false;
  std::string record;
  for (std::string line; std::getline(smaps, line);) {
    unsigned long lo, hi;
    // Header lines start with "lo-hi "; field lines with "Name:".
    if (sscanf(line.c_str(), "%lx-%lx ", &lo, &hi) == 2 && line.find(':') > line.find(' ')) {
      if (inside) return record;
      inside = addr >= lo && addr < hi;
    }
    if (inside) record += line + "\n";
  }
  return record;
}

// A "Name:   123 kB" field of a record, in kB (-1 if absent).
inline long smaps_kb(const std::string& record, const char* name) {
  std::istringstream in(record);
  std::string want = std::string(name) + ":";
  for (std::string line; std::getline(in, line);) {
    if (line.rfind(want, 0) == 0) return strtol(line.c_str() + want.size(), nullptr, 10);
  }
  return -1;
}

inline bool smaps_has_flag(const std::string& record, const char* flag) {
  std::istringstream in(record);
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("VmFlags:", 0) != 0) continue;
    std::istringstream flags(line.substr(8));
    for (std::string f; flags >> f;) {
      if (f == flag) return true;
    }
  }
  return false;
}

// Redirects fd 2 into a temporary file until text() is called.
class stderr_capture {
 public:
  stderr_capture() {
    fflush(stderr);
    const char* dir = getenv("TEST_TMPDIR");
    std::string path = std::string(dir != nullptr ? dir : "/tmp") + "/dropalloc-stderr-XXXXXX";
    fd_ = mkstemp(path.data());
    unlink(path.c_str());
    saved_ = dup(STDERR_FILENO);
    dup2(fd_, STDERR_FILENO);
  }
  ~stderr_capture() { restore(); }
  std::string text() {
    restore();
    std::string out;
    char buf[4096];
    lseek(fd_, 0, SEEK_SET);
    for (ssize_t n; (n = read(fd_, buf, sizeof buf)) > 0;) out.append(buf, static_cast<std::size_t>(n));
    return out;
  }

 private:
  void restore() {
    if (saved_ < 0) return;
    fflush(stderr);
    dup2(saved_, STDERR_FILENO);
    close(saved_);
    saved_ = -1;
  }
  int fd_ = -1;
  int saved_ = -1;
};

inline int count_lines(const std::string& s) {
  int n = 0;
  for (char c : s) n += c == '\n';
  return n;
}

// Sanitizer runtimes slow everything several times over: tests that run for
// a time budget take less of it there.
inline constexpr bool kSanitized =
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
    true;
#else
    false;
#endif

}  // namespace hardening
