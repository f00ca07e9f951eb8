// Regression across threads: one writer rewrites blocks of the 4-8 KiB
// classes (two- and three-page straddlers) with write_and_seal through its
// handle, publishing each new (generation, seed); readers copy the block and
// then check it with the generation they took; a dropper zeroes the pages the
// blocks touch, at random, all along. `intact` must mean the copy is exactly
// the pattern of that generation. Runs with droppable memory and in the
// fallback (BUILD).
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "allocator/dropalloc.h"

using dropalloc::block_ref;
using dropalloc::block_state;
using dropalloc::droppable_resource;

namespace {

void pattern(std::uint64_t seed, unsigned char* out, std::size_t n) {
  std::uint64_t x = seed * 0x9e3779b97f4a7c15ull + 7;
  for (std::size_t i = 0; i < n; ++i) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    // Long zero runs so that witnesses sit deep in a page, sometimes none.
    const std::size_t in_page = i % 4096;
    const bool zero = in_page < (seed >> 8) % 4096 || (seed % 5 == 0 && (i / 4096) % 2 == 1);
    out[i] = zero ? 0 : static_cast<unsigned char>(x | 1);
  }
}

struct published {
  std::mutex m;
  std::uint64_t gen = 0, seed = 0;
};

}  // namespace

TEST_CASE("rewrites of straddling blocks racing copy-then-check readers and page drops") {
  droppable_resource r;
  const std::vector<std::size_t> sizes = {4096 + 64, 4096 + 1024, 7680 - 64, 8192, 6080};  // all but 8192 straddle pages
  std::vector<block_ref> blocks;
  std::vector<published> pub(sizes.size() * 4);
  for (std::size_t i = 0; i < pub.size(); ++i) blocks.push_back(r.allocate_block(sizes[i % sizes.size()], 64));
  std::atomic<bool> stop{false};
  std::atomic<long> bad{0}, intact{0}, reads{0};
  std::mutex msg_m;
  std::string first_msg;
  auto writer = [&] {
    std::mt19937_64 rng(1);
    std::vector<unsigned char> buf;
    while (!stop.load()) {
      std::size_t k = rng() % blocks.size();
      std::size_t n = r.usable_size(blocks[k].ptr);
      std::uint64_t seed = rng();
      buf.resize(n);
      pattern(seed, buf.data(), n);
      block_state w = r.write_and_seal(blocks[k], buf.data(), n);
      if (w == block_state::stale || w == block_state::foreign) bad.fetch_add(1);
      std::lock_guard g(pub[k].m);
      pub[k].gen = blocks[k].generation;
      pub[k].seed = seed;
    }
  };
  auto reader = [&](int id) {
    std::mt19937_64 rng(100 + id);
    std::vector<unsigned char> copy, want;
    while (!stop.load()) {
      std::size_t k = rng() % blocks.size();
      std::uint64_t gen, seed;
      {
        std::lock_guard g(pub[k].m);
        gen = pub[k].gen;
        seed = pub[k].seed;
      }
      if (gen == 0) continue;
      std::size_t n = r.usable_size(blocks[k].ptr);
      copy.resize(n);
      std::memcpy(copy.data(), blocks[k].ptr, n);
      block_state c = r.check(blocks[k].ptr, gen);
      reads.fetch_add(1);
      if (c != block_state::intact) continue;
      intact.fetch_add(1);
      want.resize(n);
      pattern(seed, want.data(), n);
      if (std::memcmp(copy.data(), want.data(), n) != 0) {
        bad.fetch_add(1);
        std::size_t i = 0;
        while (copy[i] == want[i]) ++i;
        std::lock_guard g(msg_m);
        if (first_msg.empty()) {
          first_msg = "size " + std::to_string(n) + " +" +
                      std::to_string(reinterpret_cast<std::uintptr_t>(blocks[k].ptr) % 4096) +
                      ": intact but byte " + std::to_string(i) + " differs";
        }
      }
    }
  };
  auto dropper = [&] {
    std::mt19937_64 rng(7);
    while (!stop.load()) {
      std::size_t k = rng() % blocks.size();
      auto* p = static_cast<char*>(blocks[k].ptr);
      std::size_t n = r.usable_size(p);
      // A page boundary the block crosses, or its first or last byte.
      auto a = reinterpret_cast<std::uintptr_t>(p);
      std::uintptr_t at = rng() % 3 == 0 ? a : rng() % 2 == 0 ? a + n - 1 : ((a + 4096) & ~std::uintptr_t{4095});
      (void)r.drop_for_testing(reinterpret_cast<void*>(at), 1);
      std::this_thread::sleep_for(std::chrono::microseconds(50 + rng() % 200));
    }
  };
  std::vector<std::thread> ts;
  ts.emplace_back(writer);
  ts.emplace_back(reader, 0);
  ts.emplace_back(reader, 1);
  ts.emplace_back(dropper);
  std::this_thread::sleep_for(std::chrono::seconds(6));
  stop.store(true);
  for (auto& t : ts) t.join();
  MESSAGE("reads " << reads.load() << ", intact " << intact.load() << " " << first_msg);
  CHECK(bad.load() == 0);
  for (auto& b : blocks) r.deallocate(b);
}
