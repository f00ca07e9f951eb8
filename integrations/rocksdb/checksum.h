// A fast 64-bit checksum of a byte range, for blocks kept unsealed (seal=0):
// there the checksum, kept in ordinary memory, is what detects a lost page.
// Not cryptographic; a lost page turns into zeros, which it tells apart
// except where the lost bytes were zeros already (then nothing was lost).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace dropalloc::rocks {

inline std::uint64_t checksum64(const void* data, std::size_t n) noexcept {
  const auto* p = static_cast<const unsigned char*>(data);
  std::uint64_t h = 0x9e3779b97f4a7c15ull ^ n;
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
