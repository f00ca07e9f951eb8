// write_and_seal at its edges: n == 0 (src == nullptr: see
// write_and_seal_null_source_bug_test), n == usable_size,
// n == usable_size + 1 (refused, nothing written), src == the block itself,
// src in another block of the resource whose page was dropped (the block gets
// what src held: zeros, sealed as such), and a 64 MiB block written with one
// byte (the whole tail is zeroed and compared: bounded time, and the tail of
// a fresh mapping is only read, never made resident).
#include <doctest/doctest.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <vector>

#include "allocator/dropalloc.h"

using dropalloc::block_ref;
using dropalloc::block_state;
using dropalloc::droppable_resource;

namespace {
// Resident set of the process in KiB (the zero page, which reads map, is not counted).
long rss_kib() {
  std::FILE* f = std::fopen("/proc/self/statm", "r");
  long size = 0, resident = 0;
  if (f == nullptr) return -1;
  if (std::fscanf(f, "%ld %ld", &size, &resident) != 2) resident = -1;
  std::fclose(f);
  return resident * 4;
}
bool all_bytes(const void* p, std::size_t n, unsigned char v) {
  const auto* c = static_cast<const unsigned char*>(p);
  for (std::size_t i = 0; i < n; ++i) {
    if (c[i] != v) return false;
  }
  return true;
}
}  // namespace

TEST_CASE("write_and_seal edges") {
  droppable_resource res;
  block_ref b = res.allocate_block(100);
  const std::size_t usable = res.usable_size(b.ptr);
  std::vector<unsigned char> src(usable + 1, 0x7e);

  CHECK(res.write_and_seal(b, src.data(), usable) == block_state::intact);
  CHECK(all_bytes(b.ptr, usable, 0x7e));
  CHECK(res.write_and_seal(b, src.data(), 0) == block_state::intact);
  CHECK(all_bytes(b.ptr, usable, 0));
  CHECK(res.write_and_seal(b, src.data(), usable) == block_state::intact);
  const block_ref before = b;
  CHECK_THROWS_AS(res.write_and_seal(b, src.data(), usable + 1), std::length_error);
  CHECK(b.generation == before.generation);
  CHECK(res.check(b) == block_state::intact);
  CHECK(all_bytes(b.ptr, usable, 0x7e));
  // The block as its own source: nothing changes but the generation.
  CHECK(res.write_and_seal(b, b.ptr, usable) == block_state::intact);
  CHECK(b.generation != before.generation);
  CHECK(res.check(before) == block_state::stale);
  CHECK(all_bytes(b.ptr, usable, 0x7e));

  // Source in another droppable block whose page was dropped.
  block_ref s = res.allocate_block(8192);
  std::memset(s.ptr, 0x44, 8192);
  REQUIRE(res.seal(s) == block_state::intact);
  REQUIRE(res.drop_for_testing(s.ptr, 8192) == 0);
  CHECK(res.write_and_seal(b, s.ptr, 64) == block_state::intact);
  CHECK(all_bytes(b.ptr, usable, 0));
  CHECK(res.check(s) == block_state::dropped);

  // A large block written with one byte.
  constexpr std::size_t kBig = 64u << 20;
  block_ref big = res.allocate_block(kBig);
  const long rss0 = rss_kib();
  auto t0 = std::chrono::steady_clock::now();
  unsigned char one = 9;
  CHECK(res.write_and_seal(big, &one, 1) == block_state::intact);
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count();
  const long grown = rss_kib() - rss0;
  MESSAGE("write_and_seal of 1 byte into a 64 MiB block: " << ms << " ms, process resident set grew " << grown
                                                           << " KiB (stats().bytes_resident, from mincore, "
                                                           << (res.stats().bytes_resident >> 10) << " KiB)");
  CHECK(static_cast<unsigned char*>(big.ptr)[0] == 9);
#if !defined(__SANITIZE_THREAD__) && !defined(__SANITIZE_ADDRESS__)
  // The untouched tail is handed back to the OS whole, neither written nor
  // read: it must not become resident, even where the kernel maps no shared
  // zero page for a read. (A sanitizer's shadow of what is read would count.)
  CHECK(grown < 8 * 1024);
#endif
  res.deallocate(big);
  res.deallocate(s);
  res.deallocate(b);
}
