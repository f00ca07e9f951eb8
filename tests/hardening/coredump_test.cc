// Core dumps leave droppable data out (VM_DONTDUMP, and MADV_DONTDUMP on the
// fallback): checked in smaps always, and with a real dump where the system
// writes core files into the working directory.
#include <doctest/doctest.h>

#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "allocator/dropalloc.h"
#include "tests/hardening/util.h"

namespace {

// Byte i of a recognisable pattern. Bytes are computed one at a time where
// they are stored, so the dumping child holds the pattern nowhere else.
unsigned char pattern(unsigned seed, std::size_t i) {
  return static_cast<unsigned char>(((i * 2654435761u) >> 7) ^ (seed * 97u) ^ (i >> 3));
}

void fill(void* p, std::size_t n, unsigned seed) {
  auto* b = static_cast<volatile unsigned char*>(p);
  for (std::size_t i = 0; i < n; ++i) b[i] = pattern(seed, i);
}

// Whether the file holds the first 64 bytes of the pattern, skipping holes.
bool file_contains(const std::string& path, unsigned seed) {
  unsigned char needle[64];
  for (std::size_t i = 0; i < sizeof needle; ++i) needle[i] = pattern(seed, i);
  int fd = open(path.c_str(), O_RDONLY);
  if (fd < 0) return false;
  off_t end = lseek(fd, 0, SEEK_END);
  std::vector<unsigned char> buf(1 << 20);
  bool found = false;
  for (off_t data = lseek(fd, 0, SEEK_DATA); data >= 0 && data < end && !found;) {
    off_t hole = lseek(fd, data, SEEK_HOLE);
    for (off_t off = data; off < hole && !found;) {
      ssize_t n = pread(fd, buf.data(), buf.size(), off);
      if (n <= 0) break;
      found = memmem(buf.data(), static_cast<std::size_t>(n), needle, sizeof needle) != nullptr;
      if (n <= static_cast<ssize_t>(sizeof needle)) break;
      off += n - static_cast<off_t>(sizeof needle);  // overlap: a match across reads
    }
    data = lseek(fd, hole, SEEK_DATA);
  }
  close(fd);
  return found;
}

}  // namespace

TEST_CASE("arenas are excluded from core dumps") {
  dropalloc::droppable_resource res;
  dropalloc::resource_options fb;
  fb.force_fallback = true;
  dropalloc::droppable_resource fallback(fb);
  for (auto* r : {&res, &fallback}) {
    for (std::size_t size : {std::size_t{64}, std::size_t{50000}, std::size_t{1} << 20}) {
      void* p = r->allocate(size);
      CHECK(hardening::smaps_has_flag(hardening::smaps_record(p), "dd"));
      r->deallocate(p, size);
    }
  }

  if (hardening::kSanitized) {
    MESSAGE("real core dump skipped under ASan/TSan (their runtimes turn core dumps off)");
    return;
  }
  std::string pattern_setting;
  std::getline(std::ifstream("/proc/sys/kernel/core_pattern"), pattern_setting);
  if (pattern_setting.empty() || pattern_setting[0] == '|' || pattern_setting[0] == '/' ||
      pattern_setting.find('%') != std::string::npos) {
    MESSAGE("real core dump skipped: core_pattern is '" << pattern_setting
                                                        << "', not a plain file name in the working directory");
    return;
  }
  const char* tmp = getenv("TEST_TMPDIR");
  std::string dir = std::string(tmp != nullptr ? tmp : "/tmp") + "/coredump";
  mkdir(dir.c_str(), 0700);
  fflush(nullptr);
  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    rlimit unlimited{RLIM_INFINITY, RLIM_INFINITY};
    if (setrlimit(RLIMIT_CORE, &unlimited) != 0 || chdir(dir.c_str()) != 0) _exit(1);
    std::vector<void*> keep;
    for (auto [r, seed] : {std::pair{&res, 1u}, std::pair{&fallback, 2u}}) {
      for (std::size_t size : {std::size_t{3000}, std::size_t{50000}, std::size_t{1} << 20}) {
        auto b = r->allocate_block(size);
        fill(b.ptr, size, seed);
        r->seal(b.ptr);
        keep.push_back(b.ptr);
      }
    }
    void* control = malloc(8192);  // ordinary memory: must be in the dump
    fill(control, 8192, 3);
    keep.push_back(control);
    signal(SIGABRT, SIG_DFL);
    abort();
  }
  int status = 0;
  REQUIRE(waitpid(pid, &status, 0) == pid);
  REQUIRE(WIFSIGNALED(status));
  std::string core;
  for (const std::string& name : {std::string("core"), "core." + std::to_string(pid)}) {
    struct stat st{};
    if (stat((dir + "/" + name).c_str(), &st) == 0) core = dir + "/" + name;
  }
  if (!WCOREDUMP(status) || core.empty()) {
    MESSAGE("real core dump skipped: the system wrote no core file (sandbox or limits)");
    return;
  }
  CHECK(file_contains(core, 3));        // the dump is readable and holds ordinary memory
  CHECK_FALSE(file_contains(core, 1));  // droppable arenas are not in it
  CHECK_FALSE(file_contains(core, 2));  // nor are fallback arenas
  unlink(core.c_str());
}
