// dropalloc demo: keep regenerable data in droppable memory, lose some of it
// the way the kernel would under memory pressure, find exactly what was lost,
// rebuild it.
//
//   bazel run -c opt //examples:demo
#include <cstdint>
#include <cstdio>
#include <memory_resource>
#include <string>
#include <vector>

#include "allocator/dropalloc.h"

namespace {

// "Decoding" a tile: deterministic bytes we can always produce again.
void decode_tile(int id, std::pmr::vector<std::uint8_t>& out) {
  out.resize(16 * 1024);
  std::uint32_t x = static_cast<std::uint32_t>(id) * 2654435761u + 1;
  for (auto& b : out) {
    x = x * 1103515245u + 12345u;
    b = static_cast<std::uint8_t>(x >> 24) | 1;
  }
}

void print_stats(const char* when, const dropalloc::droppable_resource& res) {
  auto s = res.stats();
  std::printf("%-22s %6llu blocks live, %7.2f MiB live, %5.2f MiB resident, %llu arenas, %llu drops detected\n",
              when, static_cast<unsigned long long>(s.blocks_live), s.bytes_live / 1048576.0,
              s.bytes_resident / 1048576.0, static_cast<unsigned long long>(s.arenas_mapped),
              static_cast<unsigned long long>(s.drops_detected));
}

}  // namespace

int main() {
  dropalloc::droppable_resource res;
  std::printf("backing: %s\n\n", dropalloc::to_string(res.arena_backing()));

  // 1. Fill pmr containers from the droppable resource and seal what we wrote.
  constexpr int kTiles = 256;
  // Nested pmr containers: the outer vector hands &res to every inner one.
  std::pmr::vector<std::pmr::vector<std::uint8_t>> tiles(&res);
  tiles.resize(kTiles);
  std::vector<std::uint64_t> generations(kTiles);  // ordinary memory
  std::pmr::vector<std::pmr::string> captions(&res);
  for (int i = 0; i < kTiles; ++i) {
    decode_tile(i, tiles[i]);
    res.seal(tiles[i].data());
    generations[i] = res.generation(tiles[i].data());
    captions.emplace_back("tile " + std::to_string(i) + " of the demo image, decoded once");
  }
  std::printf("decoded %d tiles of 16 KiB and %zu captions\n", kTiles, captions.size());
  print_stats("after decoding:", res);

  // 2. Simulate memory pressure: the kernel zeroes some pages. (For real it
  //    happens under a cgroup limit; tests/cgroup_pressure_test.cc shows it.)
  int forced = 0;
  for (int i = 0; i < kTiles; i += 9) {
    res.drop_for_testing(tiles[i].data() + 4096 * (i % 4), 4096);
    ++forced;
  }
  std::printf("\nkernel dropped one page of %d tiles\n", forced);

  // 3. Find exactly what was lost: a few loads per page, no system call.
  std::vector<int> lost;
  for (int i = 0; i < kTiles; ++i) {
    if (!res.is_intact(tiles[i].data(), generations[i])) lost.push_back(i);
  }
  std::printf("check found %zu tiles damaged:", lost.size());
  for (int i : lost) std::printf(" %d", i);
  std::printf("\n");
  print_stats("after the drop:", res);

  // 4. Rebuild only those, then verify everything against a fresh decode.
  for (int i : lost) {
    decode_tile(i, tiles[i]);
    res.seal(tiles[i].data());
    generations[i] = res.generation(tiles[i].data());
  }
  int wrong = 0;
  std::pmr::vector<std::uint8_t> fresh;
  for (int i = 0; i < kTiles; ++i) {
    decode_tile(i, fresh);
    bool same = fresh == tiles[i];
    // Safe read protocol: what we read counts only if the block is still
    // intact after reading it.
    if (!same && res.is_intact(tiles[i].data(), generations[i])) ++wrong;
  }
  std::printf("rebuilt %zu tiles; tiles with wrong contents reported intact: %d\n", lost.size(), wrong);
  print_stats("after rebuilding:", res);
  return wrong == 0 && lost.size() == static_cast<std::size_t>(forced) ? 0 : 1;
}
