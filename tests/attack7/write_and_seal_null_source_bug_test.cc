// Contract: write_and_seal(p, src, n) with n == 0 makes the block all zeros;
// heap::write_and_seal refuses src == nullptr only when n != 0, so
// (p, nullptr, 0) is accepted (as memcpy-like APIs and empty containers'
// data() lead callers to expect), and asking never crashes.
//
// What happens: seal_block calls std::memcpy(start, req.src, req.n) with
// src == nullptr and n == 0. memcpy's source is declared nonnull: undefined
// behaviour, which the sanitizer build the project runs in CI
// (--config=ubsan, -fno-sanitize-recover=all) turns into an abort:
//   allocator/core/seal_check.cc:212:16: runtime error: null pointer passed
//   as argument 2, which is declared to never be null
// (holds_written guards its memcmp with n != 0; the memcpy is not guarded).
// In a plain build the call happens to work, so this test FAILS ONLY UNDER
// --config=ubsan: bazel test --config=ubsan //tests/attack7:write_and_seal_null_source_bug_test
//
// Where: allocator/core/seal_check.cc heap::seal_block (`if (writes) {
// std::memcpy(start, req.src, req.n); ...`).
#include <doctest/doctest.h>

#include <cstring>
#include <vector>

#include "allocator/dropalloc.h"

using dropalloc::block_ref;
using dropalloc::block_state;

TEST_CASE("write_and_seal(b, nullptr, 0) zeroes and seals the block") {
  dropalloc::droppable_resource res;
  block_ref b = res.allocate_block(100);
  std::memset(b.ptr, 0x7e, 100);
  CHECK(res.write_and_seal(b, nullptr, 0) == block_state::intact);
  const auto* c = static_cast<const unsigned char*>(b.ptr);
  bool zeros = true;
  for (std::size_t i = 0; i < res.usable_size(b.ptr); ++i) zeros = zeros && c[i] == 0;
  CHECK(zeros);
  std::vector<char> empty;  // data() of an empty vector is nullptr
  CHECK(res.write_and_seal(b.ptr, empty.data(), empty.size()) == block_state::intact);
  res.deallocate(b);
}
