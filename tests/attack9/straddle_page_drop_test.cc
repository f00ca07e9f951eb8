// Model test: blocks of every class from 4 to 8 KiB (64 bytes apart, so they
// straddle two or three pages at ever-shifting offsets) and their neighbours
// are filled with patterns aimed at the per-page witnesses (zero prefixes, a
// single non-zero byte at the last byte of a portion, all-zero portions,
// sparse bytes), sealed (seal after memcpy, or write_and_seal), and then every
// page they touch is dropped alone. A shadow model says which blocks held a
// non-zero byte on that page: those must never read `intact`; the others must
// read `intact` with their bytes unchanged. Lost blocks are rewritten and the
// walk goes on.
#include <doctest/doctest.h>

#include <cstring>
#include <map>
#include <random>
#include <set>
#include <vector>

#include "allocator/dropalloc.h"

using dropalloc::block_ref;
using dropalloc::block_state;
using dropalloc::droppable_resource;

namespace {

constexpr std::size_t kPg = 4096;

struct shadow {
  block_ref b;
  std::size_t size;  // bytes the model fills (usable_size)
  std::vector<unsigned char> bytes;
};

void fill(std::mt19937_64& rng, shadow& s) {
  auto base = reinterpret_cast<std::uintptr_t>(s.b.ptr);
  std::fill(s.bytes.begin(), s.bytes.end(), 0);
  auto nz = [&] { return static_cast<unsigned char>(rng() % 255 + 1); };
  switch (rng() % 8) {
    case 0:
      for (auto& c : s.bytes) c = nz();
      break;
    case 1:
      break;  // all zeros: no witness anywhere
    case 2:
      s.bytes.back() = nz();
      break;
    case 3:  // the last byte of each page portion only
      for (std::size_t i = 0; i < s.size; ++i) {
        if ((base + i + 1) % kPg == 0 || i + 1 == s.size) s.bytes[i] = nz();
      }
      break;
    case 4:
      s.bytes[0] = nz();
      break;
    case 5:
      for (std::size_t i = 0; i < s.size; i += 64) {
        if (rng() % 40 == 0) s.bytes[i + rng() % 64] = nz();
      }
      break;
    case 6:  // the first byte of each later portion only
      for (std::size_t i = 1; i < s.size; ++i) {
        if ((base + i) % kPg == 0) s.bytes[i] = nz();
      }
      break;
    default: {  // one random byte in a random portion
      s.bytes[rng() % s.size] = nz();
      break;
    }
  }
}

bool page_has_data(const shadow& s, std::uintptr_t page) {
  auto base = reinterpret_cast<std::uintptr_t>(s.b.ptr);
  for (std::size_t i = 0; i < s.size; ++i) {
    if (((base + i) & ~(kPg - 1)) == page && s.bytes[i] != 0) return true;
  }
  return false;
}

block_state seal_it(std::mt19937_64& rng, droppable_resource& r, shadow& s) {
  if (rng() % 2 == 0) return r.write_and_seal(s.b, s.bytes.data(), s.size);
  std::memcpy(s.b.ptr, s.bytes.data(), s.size);
  if (rng() % 2 == 0) return r.seal(s.b);
  return r.seal_rewritten(s.b);
}

}  // namespace

TEST_CASE("every page a straddling block touches, dropped alone, is seen; untouched blocks stay intact") {
  std::mt19937_64 rng(9);
  std::vector<std::size_t> sizes;
  for (std::size_t sz = 4096 - 256; sz <= 8192 + 1024; sz += 64) sizes.push_back(sz);
  sizes.push_back(3000);
  sizes.push_back(2048 + 8);
  std::size_t failures = 0;
  for (std::size_t size : sizes) {
    dropalloc::resource_options o;
    droppable_resource r(o);
    std::vector<shadow> blocks;
    const int n = 24;
    for (int i = 0; i < n; ++i) {
      shadow s;
      s.b = r.allocate_block(size, rng() % 3 == 0 ? 64 : alignof(std::max_align_t));
      s.size = r.usable_size(s.b.ptr);
      s.bytes.assign(s.size, 0);
      fill(rng, s);
      blocks.push_back(std::move(s));
    }
    for (auto& s : blocks) REQUIRE(seal_it(rng, r, s) == block_state::intact);
    std::set<std::uintptr_t> pages;
    for (auto& s : blocks) {
      auto a = reinterpret_cast<std::uintptr_t>(s.b.ptr);
      for (auto p = a & ~(kPg - 1); p < a + s.size; p += kPg) pages.insert(p);
    }
    for (std::uintptr_t page : pages) {
      REQUIRE(r.drop_for_testing(reinterpret_cast<void*>(page), kPg) == 0);
      for (auto& s : blocks) {
        const bool lost = page_has_data(s, page);
        const block_state c = r.check(s.b);
        const bool same = std::memcmp(s.b.ptr, s.bytes.data(), s.size) == 0;
        if ((c == block_state::intact && !same) || (c != block_state::intact && !lost) ||
            (lost && c != block_state::dropped)) {
          ++failures;
          if (failures < 20) {
            MESSAGE("size " << size << " usable " << s.size << " block +"
                    << (reinterpret_cast<std::uintptr_t>(s.b.ptr) % kPg) << " page "
                    << (page - (reinterpret_cast<std::uintptr_t>(s.b.ptr) & ~(kPg - 1))) / kPg
                    << ": lost " << lost << " same " << same << " check "
                    << std::string(dropalloc::to_string(c)));
          }
        }
        if (c == block_state::dropped) {
          fill(rng, s);
          const block_state w = r.write_and_seal(s.b, s.bytes.data(), s.size);
          if (w != block_state::intact) {
            ++failures;
            MESSAGE("rewrite after drop: " << std::string(dropalloc::to_string(w)));
          }
        }
      }
    }
    for (auto& s : blocks) r.deallocate(s.b);
  }
  CHECK(failures == 0);
}
