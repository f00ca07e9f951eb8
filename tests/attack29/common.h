// Helpers shared by the attack round 29 tests (spare thread-cache tables).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>

#include "tests/zero_page.h"

namespace attack29 {

// Sanitizer builds run several times slower: fewer rounds there.
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
inline constexpr int kSlow = 1;
#else
inline constexpr int kSlow = 0;
#endif

struct tagged {
  unsigned char* p;
  std::size_t size;
  unsigned char tag;
};

inline void fill(const tagged& t) { std::memset(t.p, t.tag, t.size); }

inline bool holds(const tagged& t) {
  for (std::size_t i = 0; i < t.size; ++i) {
    if (t.p[i] != t.tag) return false;
  }
  return true;
}

// Resident KiB of this process.
inline std::size_t rss_kib() {
  const long pages = dropalloc::testing::resident_pages();
  return pages < 0 ? 0 : static_cast<std::size_t>(pages) * 4;
}

inline std::size_t map_count() {
  FILE* f = std::fopen("/proc/self/maps", "r");
  std::size_t n = 0;
  if (f == nullptr) return 0;
  int c;
  while ((c = std::fgetc(f)) != EOF) n += c == '\n';
  std::fclose(f);
  return n;
}

}  // namespace attack29
