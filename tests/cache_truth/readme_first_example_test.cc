// The README's first example ("Using it"), taken through fill, drop (one
// page, everything), detect, rebuild and destruction, with its results
// checked. Destroying or walking a pmr container whose pages dropped used to
// be what that example led to; here only the library's private copies are
// ever walked, and nothing with pointers lives in droppable memory.
#include <doctest/doctest.h>

#include <cstring>
#include <memory_resource>
#include <string>
#include <string_view>
#include <vector>

#include "allocator/dropalloc.h"

namespace {

std::string decode_name(int k) { return "name " + std::to_string(k); }
std::string decompress(const char* file) { return std::string(20000, 'z') + file; }

using names_t = std::pmr::vector<std::pmr::string>;

bool names_ok(const names_t& v) {
  if (v.size() != 1000) return false;
  for (int k = 0; k < 1000; ++k) {
    if (std::string_view(v[static_cast<std::size_t>(k)]) != decode_name(k)) return false;
  }
  return true;
}

}  // namespace

TEST_CASE("README first example: fill, drop, detect, rebuild, destroy") {
  dropalloc::droppable_resource res;
  std::byte* where = nullptr;
  std::size_t size = 0;
  int builds = 0;
  {
    // The example, with a hook that remembers where the value's block is.
    dropalloc::regenerable_options opts;
    opts.on_step = [&](dropalloc::value_step s, std::byte* block, std::size_t n, std::size_t) {
      if (s == dropalloc::value_step::compared) where = block, size = n;
    };
    dropalloc::regenerable<names_t> names(
        res,
        [&](std::pmr::memory_resource* mr) {
          ++builds;
          names_t v(mr);
          for (int k = 0; k < 1000; ++k) v.emplace_back(decode_name(k));
          return v;
        },
        opts);
    CHECK(names.visit([](const names_t& v) { return v.size(); }) == 1000);   // fill
    CHECK(names.intact());
    REQUIRE(where != nullptr);
    REQUIRE(size > 4096);

    for (std::size_t page = 0; page < size; page += 4096) {
      REQUIRE(res.drop_for_testing(where + page, 1) == 0);  // one page goes
      CHECK_FALSE(names.intact());                           // detected
      CHECK(names.visit(names_ok));                          // rebuilt before use
      CHECK(names.intact());
    }
    for (int round = 0; round < 5; ++round) {
      res.drop_all_for_testing();  // everything goes
      CHECK_FALSE(names.intact());
      CHECK(names.visit(names_ok));
    }
    res.drop_all_for_testing();  // and destroyed with its pages dropped
  }
  CHECK(builds == static_cast<int>(1 + (size + 4095) / 4096 + 5));
  CHECK(res.stats().blocks_live == 0);

  // The block part of the example.
  std::string src = decompress("a.bin");
  dropalloc::block_ref b = res.allocate_block(src.size());
  REQUIRE(res.write_and_seal(b.ptr, src.data(), src.size()) == dropalloc::block_state::intact);
  std::vector<char> out(src.size());
  std::memcpy(out.data(), b.ptr, out.size());
  CHECK(res.is_intact(b));
  CHECK(std::string(out.begin(), out.end()) == src);
  res.drop_all_for_testing();
  std::memcpy(out.data(), b.ptr, out.size());  // reads zeros, no fault...
  CHECK_FALSE(res.is_intact(b));               // ...and the check says so
  res.deallocate(b.ptr, src.size());
}

TEST_CASE("flat pmr containers on a droppable_resource may be destroyed after a drop") {
  // The README's rule for using pmr containers on the resource directly: the
  // container object in ordinary memory, elements without pointers. Its
  // destructor reads nothing in droppable memory.
  dropalloc::droppable_resource res;
  for (int round = 0; round < 50; ++round) {
    std::pmr::vector<int> v(&res);
    for (int i = 0; i < 5000; ++i) v.push_back(i);
    std::pmr::string s(std::string(10000, 'q'), &res);
    res.seal(v.data());
    res.seal(s.data());
    res.drop_all_for_testing();
    CHECK(v.size() == 5000);  // the size lives in the vector object, not the pages
  }
  CHECK(res.stats().blocks_live == 0);
}
