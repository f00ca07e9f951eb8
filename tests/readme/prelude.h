// What the README's examples leave to the reader: stand-ins with the shapes
// the examples assume. Included first by the generated readme_snippets.cc.
#pragma once

#include <cstddef>
#include <cstring>
#include <memory_resource>
#include <string>
#include <vector>

// The README's snippets are fragments: some values they compute are not used.
#pragma GCC diagnostic ignored "-Wunused-variable"
#pragma GCC diagnostic ignored "-Wunused-but-set-variable"

// Fills a 64 KiB block with non-zero bytes, as a decoder would.
inline void decode_into(void* p) { std::memset(p, 0x5a, 64 * 1024); }

inline void use(const void* p) {
  volatile unsigned char sink = *static_cast<const unsigned char*>(p);
  (void)sink;
}

inline std::string decode_name(int k) { return "name " + std::to_string(k); }

inline std::string decompress(const char* file) { return std::string("contents of ") + file; }

// A builder for the README's `row` (a pmr vector of pmr strings).
inline auto build_row(int k) {
  return [k](std::pmr::memory_resource* mr) {
    std::pmr::vector<std::pmr::string> r(mr);
    r.emplace_back(decode_name(k));
    return r;
  };
}
