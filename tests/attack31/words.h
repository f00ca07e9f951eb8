// Fast test contents: 8-byte words, none zero, different per seed and offset
// (tests/pattern.h's byte loop is too slow for many MiB per operation).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace attack31 {

inline std::uint64_t word_at(std::size_t seed, std::size_t i) {
  return (static_cast<std::uint64_t>(seed) << 40) ^ (i * 0x9e3779b97f4a7c15ull) ^ 0x8000000000000001ull;
}

// Fills p[0, n) (byte i of the pattern depends only on seed and i).
inline void wfill(void* p, std::size_t n, std::size_t seed) {
  auto* b = static_cast<unsigned char*>(p);
  std::size_t words = n / 8;
  for (std::size_t i = 0; i < words; ++i) {
    std::uint64_t w = word_at(seed, i);
    std::memcpy(b + 8 * i, &w, 8);
  }
  std::uint64_t w = word_at(seed, words);
  std::memcpy(b + 8 * words, &w, n % 8);
}

inline bool wholds(const void* p, std::size_t n, std::size_t seed) {
  const auto* b = static_cast<const unsigned char*>(p);
  std::size_t words = n / 8;
  for (std::size_t i = 0; i < words; ++i) {
    std::uint64_t w;
    std::memcpy(&w, b + 8 * i, 8);
    if (w != word_at(seed, i)) return false;
  }
  std::uint64_t w = word_at(seed, words);
  return std::memcmp(b + 8 * words, &w, n % 8) == 0;
}

}  // namespace attack31
