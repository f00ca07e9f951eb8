// A fast 64-bit checksum of a byte range, for blocks kept unsealed (seal=0):
// there the checksum, kept in ordinary memory, is what detects a lost page.
// Each step of the mix can be undone, so with a known starting state data
// could be chosen to checksum like the zeros a drop leaves (a RocksDB block
// holds user keys and values). The state starts from a key drawn at random
// once per process and never shown: such data can then only be guessed, at
// odds of 2^-64. Not cryptographic beyond that.
#pragma once

#include <sys/random.h>
#include <time.h>

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace dropalloc::rocks {

inline std::uint64_t checksum_key() noexcept {
  static const std::uint64_t key = [] {
    std::uint64_t k = 0;
    if (getrandom(&k, sizeof k, 0) != static_cast<ssize_t>(sizeof k)) {
      timespec t{};
      clock_gettime(CLOCK_MONOTONIC, &t);  // no entropy source: weaker, still unknown outside
      k = static_cast<std::uint64_t>(t.tv_nsec) * 0x9e3779b97f4a7c15ull ^ static_cast<std::uint64_t>(t.tv_sec);
    }
    return k;
  }();
  return key;
}

inline std::uint64_t checksum64(const void* data, std::size_t n) noexcept {
  const auto* p = static_cast<const unsigned char*>(data);
  std::uint64_t h = 0x9e3779b97f4a7c15ull ^ checksum_key() ^ n;
  auto mix = [&h](std::uint64_t w) {
    h ^= w * 0xff51afd7ed558ccdull;
    h = (h << 31 | h >> 33) * 0xc4ceb9fe1a85ec53ull;
  };
  std::size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    std::uint64_t w;
    std::memcpy(&w, p + i, 8);
    mix(w + i);  // the position too: equal words at other offsets differ
  }
  std::uint64_t tail = 0;
  std::memcpy(&tail, p + i, n - i);
  mix(tail + i);
  return h ^ (h >> 29);
}

}  // namespace dropalloc::rocks
