// Helpers shared by the attack round 29 tests (spare thread-cache tables).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>

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

// Sum of Rss (KiB) and count of the mappings of `kib` KiB (or a multiple).
struct map_sum {
  std::size_t count = 0;
  std::size_t rss_kib = 0;
};

inline map_sum mappings_of_size(std::size_t kib) {
  map_sum out;
  FILE* f = std::fopen("/proc/self/smaps", "r");
  if (f == nullptr) return out;
  char line[512];
  bool match = false;
  while (std::fgets(line, sizeof line, f) != nullptr) {
    unsigned long size = 0, rss = 0;
    if (std::sscanf(line, "Size: %lu kB", &size) == 1) {
      // Adjacent mappings of one kind may merge (the kernel joins them):
      // a multiple of the size counts as that many.
      match = size >= kib && size % kib == 0;
      if (match) out.count += size / kib;
    } else if (match && std::sscanf(line, "Rss: %lu kB", &rss) == 1) {
      out.rss_kib += rss;
    }
  }
  std::fclose(f);
  return out;
}

inline std::size_t rss_kib() {
  FILE* f = std::fopen("/proc/self/statm", "r");
  unsigned long pages = 0, res = 0;
  if (f != nullptr) {
    if (std::fscanf(f, "%lu %lu", &pages, &res) != 2) res = 0;
    std::fclose(f);
  }
  return res * 4;
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
