// seal=0 trusts checksum64 (checksum.h) to tell a block from the zeros a drop
// leaves. checksum64 is an invertible mix: given everything but the last word
// of a block, the last word can be solved for so that the block's checksum
// equals the checksum of n zero bytes. Once the kernel drops the block's
// pages, the zeros pass the check and Lookup hands RocksDB a block that
// differs from the one inserted. checksum.h says it "tells apart [a lost page]
// except where the lost bytes were zeros already"; here every byte but the
// crafted word is random and non-zero.
#include <doctest/doctest.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <random>
#include <string>

#include "integrations/rocksdb/checksum.h"
#include "integrations/rocksdb/secondary_cache.h"
#include "integrations/rocksdb/tests/string_item.h"

namespace {

using namespace dropalloc::rocks;
using namespace dropalloc::rocks::testing;

constexpr std::uint64_t kC1 = 0xff51afd7ed558ccdull;
constexpr std::uint64_t kC2 = 0xc4ceb9fe1a85ec53ull;

std::uint64_t inverse(std::uint64_t a) {  // a odd: Newton's iteration mod 2^64
  std::uint64_t x = a;
  for (int i = 0; i < 6; ++i) x *= 2 - a * x;
  return x;
}

// checksum64's state after the words before `upto` (n a multiple of 8).
std::uint64_t state(const unsigned char* p, std::size_t n, std::size_t upto) {
  std::uint64_t h = 0x9e3779b97f4a7c15ull ^ n;
  for (std::size_t i = 0; i < upto; i += 8) {
    std::uint64_t w;
    std::memcpy(&w, p + i, 8);
    h ^= (w + i) * kC1;
    h = (h << 31 | h >> 33) * kC2;
  }
  return h;
}

// Random bytes whose last word is chosen so that checksum64 of the result
// equals checksum64 of n zero bytes.
std::string forged(std::size_t n, std::uint64_t seed) {
  std::string v(n, '\0');
  std::mt19937_64 rng(seed);
  for (auto& c : v) c = static_cast<char>(rng() | 1);
  std::string z(n, '\0');
  std::size_t last = n - 8;
  auto* p = reinterpret_cast<unsigned char*>(v.data());
  std::uint64_t sv = state(p, n, last);
  std::uint64_t sz = state(reinterpret_cast<const unsigned char*>(z.data()), n, last);
  std::uint64_t w = inverse(kC1) * (sv ^ sz ^ (last * kC1)) - last;
  std::memcpy(p + last, &w, 8);
  return v;
}

}  // namespace

TEST_CASE("the forged block checksums as zeros (the premise)") {
  std::string v = forged(8192, 1);
  std::string z(8192, '\0');
  CHECK(v != z);
  CHECK(checksum64(v.data(), v.size()) == checksum64(z.data(), z.size()));
}

TEST_CASE("seal=0: a dropped block whose contents were forged is served as zeros") {
  secondary_cache_options o;
  o.seal = false;
  o.budget = budget_mode::kernel;
  secondary_cache c(o);
  std::string v = forged(8192, 7);
  REQUIRE(c.Insert("blk", &v, &kHelper).ok());
  c.drop_all_for_testing();  // the kernel takes the pages back
  bool in_sec = false;
  auto h = c.Lookup("blk", create_string(), true, false, in_sec);
  // The promise: a lost block is a miss. Fails: a hit with 8192 zero bytes.
  if (h) {
    std::unique_ptr<std::string> got(static_cast<std::string*>(h->Value()));
    CHECK_MESSAGE(*got == v, "served a block that differs from the inserted one (", got->size(), " bytes, ",
                  std::count(got->begin(), got->end(), '\0'), " of them zero)");
  }
  CHECK(h == nullptr);
}
