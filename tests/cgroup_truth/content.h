// What the drop-truth test writes: block sizes skewed to small blocks (with
// plenty that span several pages, up to 1 MiB), and contents chosen to be hard
// on a per-page witness check (all-zero blocks and pages, long zero prefixes,
// a single non-zero word per page). Everything derives from a seed, so the
// expected bytes never have to be kept: only a checksum, in ordinary memory.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace dropalloc::truth {

inline constexpr std::size_t kMaxBlock = std::size_t{1} << 20;
inline constexpr std::size_t kPageBytes = 4096;

// splitmix64's finaliser: every choice below is a function of a seed.
inline std::uint64_t mix(std::uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

struct rng {
  std::uint64_t state;
  std::uint64_t next() { return mix(state += 0x632be59bd9b4e019ull); }
  std::uint64_t below(std::uint64_t n) { return next() % n; }
};

// Uniform within a power-of-two bucket, the bucket uniform in [lo, hi).
inline std::size_t log_uniform(std::uint64_t r, int lo_shift, int hi_shift) {
  int e = lo_shift + static_cast<int>(r % static_cast<std::uint64_t>(hi_shift - lo_shift));
  std::size_t base = std::size_t{1} << e;
  return base + mix(r) % base;
}

// 90% of blocks are 8-511 B, 8.9% up to 16 KiB (a third of those span pages),
// 1% up to 256 KiB and 0.1% up to 1 MiB: about 2 KB a block on average, so a
// million blocks stay near 2 GB of writes while ~40,000 are multi-page.
inline std::size_t pick_size(std::uint64_t r) {
  std::uint64_t bucket = r % 1000;
  std::uint64_t v = mix(r ^ 0x5bd1e995ull);
  if (bucket < 900) return log_uniform(v, 3, 9);
  if (bucket < 989) return log_uniform(v, 9, 14);
  if (bucket < 999) return log_uniform(v, 14, 18);
  return v % 8 == 0 ? kMaxBlock : log_uniform(v, 18, 20);
}

enum class pattern : std::uint8_t {
  random,          // every word non-zero (almost surely)
  zeros,           // nothing to witness: a drop loses nothing
  zero_half,       // the first half zero: witnesses sit late in the block
  word_per_page,   // one non-zero word per 4 KiB, at a seeded offset
  zero_odd_pages,  // every other 4 KiB of the block all zero
  last_byte,       // only the very last byte non-zero
};
inline constexpr int kPatterns = 6;

inline const char* to_string(pattern p) {
  static const char* const names[kPatterns] = {"random", "zeros", "zero_half",
                                               "word_per_page", "zero_odd_pages", "last_byte"};
  return names[static_cast<int>(p)];
}

// Half of the blocks are plain random; the rest share the hard patterns.
inline pattern pattern_of(std::uint64_t seed) {
  std::uint64_t r = mix(seed ^ 0xa5a5a5a5ull) % 10;
  return r < 5 ? pattern::random : static_cast<pattern>(r - 4);
}

inline void put_word(unsigned char* out, std::size_t size, std::size_t at, std::uint64_t w) {
  std::memcpy(out + at, &w, size - at < 8 ? size - at : 8);
}

// The expected bytes of a block: a pure function of (seed, size).
inline void fill(std::uint64_t seed, std::size_t size, unsigned char* out) {
  pattern p = pattern_of(seed);
  if (p == pattern::zeros || p == pattern::word_per_page || p == pattern::last_byte) {
    std::memset(out, 0, size);
  } else {
    std::uint64_t x = mix(seed) | 1;
    for (std::size_t k = 0; k < size; k += 8) {
      x ^= x << 13;
      x ^= x >> 7;
      x ^= x << 17;
      put_word(out, size, k, x);
    }
  }
  switch (p) {
    case pattern::zero_half:
      std::memset(out, 0, size / 2);
      break;
    case pattern::word_per_page:
      for (std::size_t page = 0; page < size; page += kPageBytes) {
        std::size_t span = size - page < kPageBytes ? size - page : kPageBytes;
        std::size_t at = page + mix(seed + page) % ((span + 7) / 8) * 8;
        put_word(out, size, at, mix(seed ^ page) | 0x80);
      }
      break;
    case pattern::zero_odd_pages:
      for (std::size_t page = kPageBytes; page < size; page += 2 * kPageBytes) {
        std::memset(out + page, 0, size - page < kPageBytes ? size - page : kPageBytes);
      }
      break;
    case pattern::last_byte:
      out[size - 1] = 0x5a;
      break;
    default:
      break;
  }
}

// A 64-bit checksum of n bytes. Reads the block with plain loads: the kernel
// may zero a page mid-read, which is why every read is followed by a check.
inline std::uint64_t checksum(const void* data, std::size_t n) {
  const auto* p = static_cast<const unsigned char*>(data);
  std::uint64_t h = 0x243f6a8885a308d3ull ^ n;
  std::size_t k = 0;
  for (; k + 8 <= n; k += 8) {
    std::uint64_t w;
    std::memcpy(&w, p + k, 8);
    h = (h ^ w) * 0x9fb21c651e98df25ull;
    h ^= h >> 29;
  }
  std::uint64_t tail = 0;
  std::memcpy(&tail, p + k, n - k);
  h = (h ^ tail) * 0x9fb21c651e98df25ull;
  return h ^ (h >> 32);
}

}  // namespace dropalloc::truth
