// The backing: really droppable where the kernel allows it, a working fallback
// where it does not, and the fork behaviour of both.
#include <doctest/doctest.h>

#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>

#include "allocator/dropalloc.h"

using dropalloc::backing;
using dropalloc::block_state;
using dropalloc::droppable_resource;

namespace {

// VmFlags of the /proc/self/smaps mapping containing p ("" if none).
std::string vm_flags_of(const void* p) {
  std::ifstream smaps("/proc/self/smaps");
  auto addr = reinterpret_cast<std::uintptr_t>(p);
  bool inside = false;
  for (std::string line; std::getline(smaps, line);) {
    unsigned long lo, hi;
    if (sscanf(line.c_str(), "%lx-%lx ", &lo, &hi) == 2 && line.find(':') > line.find(' ')) {
      inside = addr >= lo && addr < hi;
    } else if (inside && line.rfind("VmFlags:", 0) == 0) {
      return line;
    }
  }
  return "";
}

bool has_flag(const std::string& flags, const char* flag) {
  std::istringstream in(flags);
  for (std::string f; in >> f;) {
    if (f == flag) return true;
  }
  return false;
}

}  // namespace

TEST_CASE("arenas are MAP_DROPPABLE mappings (smaps shows dp) where the kernel has it") {
  droppable_resource res;
  void* small = res.allocate(64, 8);
  void* large = res.allocate(1 << 20, 8);
  std::memset(small, 1, 64);
  std::memset(large, 1, 1 << 20);
  if (res.arena_backing() != backing::droppable) {
    MESSAGE("kernel refused MAP_DROPPABLE; checking the fallback instead");
    CHECK_FALSE(has_flag(vm_flags_of(small), "dp"));
  } else {
    CHECK(has_flag(vm_flags_of(small), "dp"));
    CHECK(has_flag(vm_flags_of(large), "dp"));
    CHECK(res.stats().droppable);
  }
  // Metadata is never droppable: the segment map lives in ordinary memory.
  res.deallocate(small, 64, 8);
  res.deallocate(large, 1 << 20, 8);
}

TEST_CASE("forced fallback: private memory, everything still works") {
  dropalloc::resource_options opts;
  opts.force_fallback = true;
  droppable_resource res(opts);
  CHECK(res.arena_backing() == backing::private_fallback);
  CHECK_FALSE(res.stats().droppable);
  std::pmr::vector<std::pmr::string> v(&res);
  for (int i = 0; i < 1000; ++i) v.emplace_back(300, 'x');
  CHECK_FALSE(has_flag(vm_flags_of(v[10].data()), "dp"));
  CHECK(has_flag(vm_flags_of(v[10].data()), "wf"));  // wipe on fork, like droppable
  auto b = res.allocate_block(10000);
  std::memset(b.ptr, 3, 10000);
  CHECK(res.seal(b.ptr) == block_state::intact);
  res.drop_for_testing(b.ptr, 1);
  CHECK(res.check(b.ptr, b.generation) == block_state::dropped);
  res.deallocate(b.ptr, 10000);
}

TEST_CASE("fork: the child finds its blocks dropped, the parent keeps them") {
  for (bool fallback : {false, true}) {
    CAPTURE(fallback);
    dropalloc::resource_options opts;
    opts.force_fallback = fallback;
    droppable_resource res(opts);
    auto small = res.allocate_block(100);
    auto big = res.allocate_block(100000);
    std::memset(small.ptr, 9, 100);
    std::memset(big.ptr, 9, 100000);
    res.seal(small.ptr);
    res.seal(big.ptr);
    fflush(nullptr);
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      int code = 0;
      if (res.check(small.ptr, small.generation) != block_state::dropped) code |= 1;
      if (res.check(big.ptr, big.generation) != block_state::dropped) code |= 2;
      if (static_cast<unsigned char*>(big.ptr)[5000] != 0) code |= 4;
      // The child can still allocate and use the resource.
      auto fresh = res.allocate_block(100);
      std::memset(fresh.ptr, 1, 100);
      if (res.seal(fresh.ptr) != block_state::intact) code |= 8;
      _exit(code);
    }
    int status = 0;
    REQUIRE(waitpid(pid, &status, 0) == pid);
    REQUIRE(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
    CHECK(res.check(small.ptr, small.generation) == block_state::intact);
    CHECK(res.check(big.ptr, big.generation) == block_state::intact);
    CHECK(static_cast<unsigned char*>(big.ptr)[5000] == 9);
  }
}
