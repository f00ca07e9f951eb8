// The std::pmr::memory_resource contract: every standard pmr container,
// nested allocator-aware types, all alignments, size 0, absurd sizes.
#include <doctest/doctest.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <forward_list>
#include <limits>
#include <list>
#include <map>
#include <memory_resource>
#include <set>
#include <sstream>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "allocator/dropalloc.h"
#include "allocator/os/os.h"

using dropalloc::block_state;
using dropalloc::droppable_resource;

TEST_CASE("every std::pmr container works on the droppable resource") {
  droppable_resource res;
  {
    std::pmr::vector<int> v(&res);
    std::pmr::deque<long> d(&res);
    std::pmr::list<double> l(&res);
    std::pmr::forward_list<int> fl(&res);
    std::pmr::map<int, std::pmr::string> m(&res);
    std::pmr::multimap<int, int> mm(&res);
    std::pmr::set<int> s(&res);
    std::pmr::multiset<int> ms(&res);
    std::pmr::unordered_map<int, std::pmr::string> um(&res);
    std::pmr::unordered_set<int> us(&res);
    std::pmr::unordered_multimap<int, int> umm(&res);
    std::pmr::unordered_multiset<int> ums(&res);
    std::pmr::string str(&res);
    for (int i = 0; i < 20000; ++i) {
      v.push_back(i);
      d.push_front(i);
      l.push_back(i * 0.5);
      fl.push_front(i);
      m.emplace(i, std::to_string(i) + " a string long enough to leave SSO");
      mm.emplace(i % 7, i);
      s.insert(i);
      ms.insert(i % 13);
      um.emplace(i, std::to_string(i * 3) + " another string long enough to allocate");
      us.insert(i);
      umm.emplace(i % 11, i);
      ums.insert(i % 17);
      str += static_cast<char>('a' + i % 26);
    }
    for (int i = 0; i < 20000; i += 2) {
      m.erase(i);
      um.erase(i);
      s.erase(i);
    }
    CHECK(v.size() == 20000);
    CHECK(v[12345] == 12345);
    CHECK(d.back() == 0);
    CHECK(m.at(12345) == "12345 a string long enough to leave SSO");
    CHECK(um.at(777) == "2331 another string long enough to allocate");
    CHECK(s.size() == 10000);
    CHECK(str.size() == 20000);
    CHECK(m.get_allocator().resource() == &res);
    CHECK(res.stats().blocks_live > 0);
  }
  CHECK(res.stats().blocks_live == 0);
  CHECK(res.stats().bytes_live == 0);
}

TEST_CASE("nested pmr strings in vectors propagate the resource") {
  droppable_resource res;
  std::pmr::vector<std::pmr::vector<std::pmr::string>> outer(&res);
  for (int i = 0; i < 200; ++i) {
    outer.emplace_back();
    for (int j = 0; j < 50; ++j) outer.back().emplace_back(100 + j, static_cast<char>('A' + j % 26));
  }
  for (auto& inner : outer) {
    CHECK(inner.get_allocator().resource() == &res);
    for (auto& s : inner) {
      CHECK(s.get_allocator().resource() == &res);
      CHECK(res.owns(s.data()));
    }
  }
  CHECK(std::string_view(outer[199][49]) == std::string(149, static_cast<char>('A' + 49 % 26)));
}

TEST_CASE("every power-of-two alignment, with writes filling the whole block") {
  droppable_resource res;
  for (std::size_t align = 1; align <= (std::size_t{1} << 22); align *= 2) {
    for (std::size_t size : {std::size_t{0}, std::size_t{1}, align / 2 + 1, align, align + 8, 3 * align + 5,
                             std::size_t{100000}}) {
      void* p = res.allocate(size, align);
      CAPTURE(align);
      CAPTURE(size);
      REQUIRE(p != nullptr);
      CHECK(reinterpret_cast<std::uintptr_t>(p) % align == 0);
      CHECK(res.usable_size(p) >= size);
      std::memset(p, 0xab, size);
      res.deallocate(p, size, align);
    }
  }
  CHECK(res.stats().blocks_live == 0);
}

TEST_CASE("size 0 returns distinct, freeable blocks") {
  droppable_resource res;
  void* a = res.allocate(0, 1);
  void* b = res.allocate(0, 1);
  CHECK(a != nullptr);
  CHECK(b != nullptr);
  CHECK(a != b);
  res.deallocate(a, 0, 1);
  res.deallocate(b, 0, 1);
}

TEST_CASE("absurd sizes and bad alignments throw std::bad_alloc naming the reason") {
  droppable_resource res;
  const std::size_t absurd[] = {std::numeric_limits<std::size_t>::max(),
                                std::numeric_limits<std::size_t>::max() - 4095,
                                std::size_t{1} << 62, std::size_t{1} << 47};
  for (std::size_t size : absurd) {
    CAPTURE(size);
    CHECK_THROWS_AS((void)res.allocate(size, 8), std::bad_alloc);
  }
  try {
    (void)res.allocate(std::numeric_limits<std::size_t>::max(), 8);
    FAIL("no exception");
  } catch (const dropalloc::allocation_error& e) {
    CHECK(std::string(e.what()).find("larger than the address space") != std::string::npos);
  }
  CHECK_THROWS_AS((void)res.allocate(64, 3), std::bad_alloc);
  CHECK_THROWS_AS((void)res.allocate(64, std::size_t{1} << 50), std::bad_alloc);
  // Also when this thread's cache holds blocks of a fitting class: the answer
  // must not depend on the cache.
  res.deallocate(res.allocate(24, 8), 24, 8);
  for (std::size_t align : {std::size_t{0}, std::size_t{3}, std::size_t{12}, std::size_t{24}}) {
    CAPTURE(align);
    CHECK_THROWS_AS((void)res.allocate(24, align), std::bad_alloc);
  }
  // Overflowing element counts in containers surface as length_error or bad_alloc.
  std::pmr::vector<std::uint64_t> v(&res);
  CHECK_THROWS(v.reserve(std::numeric_limits<std::size_t>::max() / 4));
  // The resource still works afterwards.
  void* p = res.allocate(64, 8);
  CHECK(p != nullptr);
  res.deallocate(p, 64, 8);
  CHECK(res.stats().blocks_live == 0);
}

TEST_CASE("is_equal is identity") {
  droppable_resource a, b;
  CHECK(a.is_equal(a));
  CHECK_FALSE(a.is_equal(b));
  CHECK_FALSE(a.is_equal(*std::pmr::new_delete_resource()));
  CHECK(a == a);
  CHECK(a != b);
}

TEST_CASE("freed blocks are reused and empty arenas go back to the OS") {
  dropalloc::resource_options opts;
  opts.empty_arena_decay_ms = 60000;  // emptied arenas stay for the second round; trim() unmaps them
  droppable_resource res(opts);
  std::vector<void*> ptrs;
  for (int i = 0; i < 100000; ++i) ptrs.push_back(res.allocate(64, 8));
  auto full = res.stats();
  CHECK(full.blocks_live == 100000);
  CHECK(full.arenas_mapped >= 2);
  for (void* p : ptrs) res.deallocate(p, 64, 8);
  ptrs.clear();
  for (int i = 0; i < 100000; ++i) ptrs.push_back(res.allocate(64, 8));
  CHECK(res.stats().arenas_mapped == full.arenas_mapped);  // reused, not remapped
  for (void* p : ptrs) res.deallocate(p, 64, 8);
  res.trim();
  CHECK(res.stats().blocks_live == 0);
  // Blocks parked in this thread's cache keep at most one arena per class.
  CHECK(res.stats().arenas_mapped <= 1);
}

TEST_CASE("double, foreign and interior frees are refused and counted, nothing is lost") {
  droppable_resource res, other;
  auto* keep = static_cast<char*>(res.allocate(64, 8));
  std::memset(keep, 'k', 64);
  void* p = res.allocate(64, 8);
  res.deallocate(p, 64, 8);
  res.deallocate(p, 64, 8);  // double free
  void* q = other.allocate(64, 8);
  res.deallocate(q, 64, 8);  // another resource's block
  int local = 0;
  res.deallocate(&local, sizeof local, alignof(int));  // not from any resource
  auto* r = static_cast<char*>(res.allocate(256, 8));
  res.deallocate(r + 8, 248, 8);  // interior pointer
  CHECK(res.stats().misuse_refused == 4);
  CHECK(std::memcmp(keep, std::string(64, 'k').data(), 64) == 0);
  CHECK(other.generation(q) != 0);  // still live in its own resource
  // The double-freed block is handed out once, not twice.
  void* a = res.allocate(64, 8);
  void* b = res.allocate(64, 8);
  CHECK(a != b);
  res.deallocate(a, 64, 8);
  res.deallocate(b, 64, 8);
  res.deallocate(r, 256, 8);
  res.deallocate(keep, 64, 8);
  other.deallocate(q, 64, 8);
  CHECK(res.stats().blocks_live == 0);
}

TEST_CASE("large blocks: freed mappings are reused, stale handles stay stale, trim unmaps them") {
  droppable_resource res;
  auto a = res.allocate_block(1 << 20);
  std::memset(a.ptr, 1, 1 << 20);
  res.deallocate(a.ptr, 1 << 20);
  CHECK(res.check(a.ptr, a.generation) == dropalloc::block_state::stale);
  CHECK(res.stats().blocks_live == 0);
  CHECK(res.stats().arenas_mapped == 1);  // kept for reuse
  auto b = res.allocate_block(900 * 1024);  // fits the cached mapping
  CHECK(b.ptr == a.ptr);
  CHECK(b.generation != a.generation);
  CHECK(res.usable_size(b.ptr) >= 900 * 1024);
  std::memset(b.ptr, 2, 900 * 1024);
  res.seal(b.ptr);
  CHECK(res.check(a.ptr, a.generation) == dropalloc::block_state::stale);
  CHECK(res.is_intact(b));
  auto c = res.allocate_block(8 << 20);  // too big for it: a new mapping
  CHECK(c.ptr != b.ptr);
  res.deallocate(b.ptr, 900 * 1024);
  res.deallocate(c.ptr, 8 << 20);
  res.trim();
  CHECK(res.stats().arenas_mapped == 0);
}

TEST_CASE("a block_ref works where a pointer and generation do; a stale one is refused") {
  droppable_resource res;
  dropalloc::block_ref b = res.allocate_block(100);
  std::memset(b.ptr, 7, 100);
  CHECK(res.seal(b) == block_state::intact);
  CHECK(res.check(b) == block_state::intact);
  res.deallocate(b);
  CHECK(res.check(b) == block_state::stale);
  CHECK(res.seal(b) == block_state::stale);
  // The address handed out again: the old handle neither seals nor frees it.
  std::vector<void*> held;
  dropalloc::block_ref again;
  for (int i = 0; i < 100000 && again.ptr != b.ptr; ++i) {
    again = res.allocate_block(100);
    held.push_back(again.ptr);
  }
  REQUIRE(again.ptr == b.ptr);
  std::memset(again.ptr, 9, 100);
  std::uint64_t refused = res.stats().misuse_refused;
  CHECK(res.seal(b) == block_state::stale);
  CHECK(res.check(again) == block_state::unsealed);
  res.deallocate(b);
  CHECK(res.stats().misuse_refused == refused + 1);
  CHECK(res.usable_size(again.ptr) >= 100);  // still live
  CHECK(static_cast<unsigned char*>(again.ptr)[99] == 9);
  for (void* p : held) res.deallocate(p, 100);
  dropalloc::block_ref none;
  res.deallocate(none);
  CHECK(res.seal(none) == block_state::foreign);
  CHECK(res.check(none) == block_state::foreign);
}

TEST_CASE("print_stats: the report for people, per resource and process-wide") {
  dropalloc::resource_options options;
  options.name = "test cache";
  dropalloc::droppable_resource res(options);
  void* p = res.allocate(3000);
  std::ostringstream one;
  res.print_stats(one);
  std::string text = one.str();
  CAPTURE(text);
  CHECK(text.find("statistics: pid ") != std::string::npos);
  CHECK(text.find("one resource") != std::string::npos);
  CHECK(text.find("heap test cache: ") != std::string::npos);
  CHECK(text.find(" in 1 blocks") != std::string::npos);
  CHECK(text.find("(peak ") != std::string::npos);
  CHECK(text.find("\nmetadata: ") != std::string::npos);
  CHECK(text.find("size classes") == std::string::npos);

  std::ostringstream all;
  dropalloc::print_stats(all, true);
  text = all.str();
  CHECK(text.find("every heap of the process") != std::string::npos);
  CHECK(text.find("heap test cache: ") != std::string::npos);
  CHECK(text.find("process: resident ") != std::string::npos);
  CHECK(text.find("size classes with arenas:") != std::string::npos);
  CHECK(text.find("     3072 ") != std::string::npos);  // the class of the 3000-byte block

  std::ostringstream failed;
  failed.setstate(std::ios::badbit);
  res.print_stats(failed);  // stops quietly
  CHECK(failed.str().empty());
  res.deallocate(p, 3000);
}
