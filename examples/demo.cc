// dropalloc demo: keep regenerable data in droppable memory, lose some of it
// the way the kernel would under memory pressure, find exactly what was lost,
// rebuild it. Only patterns that stay safe after a real drop: blocks written
// from ordinary memory and read by copying out, then checking; containers
// kept as regenerable values. Handles and staging buffers live in ordinary
// memory.
//
//   bazel run -c opt //examples:demo
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory_resource>
#include <string>
#include <vector>

#include "allocator/dropalloc.h"

namespace {

constexpr std::size_t kTileBytes = 16 * 1024;

// "Decoding" a tile: deterministic bytes we can always produce again.
void decode_tile(int id, std::vector<std::uint8_t>& out) {
  out.resize(kTileBytes);
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

// Decodes tile i in ordinary memory and writes it into its block; repeats if
// a page went while it was being written. Through the handle: rewriting a
// dropped block starts a new life of it, and the handle takes its generation.
void store_tile(dropalloc::droppable_resource& res, dropalloc::block_ref& b, int i,
                std::vector<std::uint8_t>& staging) {
  decode_tile(i, staging);
  while (res.write_and_seal(b, staging.data(), staging.size()) == dropalloc::block_state::dropped) {
  }
}

using captions_t = std::pmr::vector<std::pmr::string>;

}  // namespace

int main() {
  dropalloc::droppable_resource res;
  std::printf("backing: %s\n\n", dropalloc::to_string(res.arena_backing()));

  // 1. Decode tiles into droppable blocks; the handles stay in ordinary memory.
  constexpr int kTiles = 256;
  std::vector<dropalloc::block_ref> tiles(kTiles);
  std::vector<std::uint8_t> staging;
  for (int i = 0; i < kTiles; ++i) {
    tiles[i] = res.allocate_block(kTileBytes);
    store_tile(res, tiles[i], i, staging);
  }
  // A container you can rebuild: kept as flat bytes, visited as a private copy.
  int caption_builds = 0;
  dropalloc::regenerable<captions_t> captions(res, [&](std::pmr::memory_resource* mr) {
    ++caption_builds;
    captions_t v(mr);
    for (int i = 0; i < kTiles; ++i) v.emplace_back("tile " + std::to_string(i) + " of the demo image, decoded once");
    return v;
  });
  std::size_t n = captions.visit([](const captions_t& v) { return v.size(); });
  std::printf("decoded %d tiles of 16 KiB and %zu captions\n", kTiles, n);
  print_stats("after decoding:", res);

  // 2. Simulate memory pressure: the kernel zeroes some pages. (For real it
  //    happens under a cgroup limit; tests/cgroup_truth shows it.)
  int forced = 0;
  for (int i = 0; i < kTiles; i += 9) {
    res.drop_for_testing(static_cast<char*>(tiles[i].ptr) + 4096 * (i % 4), 4096);
    ++forced;
  }
  std::printf("\nkernel dropped one page of %d tiles\n", forced);

  // 3. Find exactly what was lost: a few loads per page, no system call.
  std::vector<int> lost;
  for (int i = 0; i < kTiles; ++i) {
    if (!res.is_intact(tiles[i])) lost.push_back(i);
  }
  std::printf("check found %zu tiles damaged:", lost.size());
  for (int i : lost) std::printf(" %d", i);
  std::printf("\n");
  print_stats("after the drop:", res);

  // 4. Rebuild only those, then verify everything against a fresh decode,
  //    reading each block the safe way: copy out, then check.
  for (int i : lost) store_tile(res, tiles[i], i, staging);
  int wrong = 0;
  std::vector<std::uint8_t> fresh, copy(kTileBytes);
  for (int i = 0; i < kTiles; ++i) {
    decode_tile(i, fresh);
    std::memcpy(copy.data(), tiles[i].ptr, kTileBytes);
    if (res.is_intact(tiles[i]) && copy != fresh) ++wrong;
  }
  std::printf("rebuilt %zu tiles; tiles with wrong contents reported intact: %d\n", lost.size(), wrong);

  // 5. Lose everything at once: the captions notice and rebuild on the next visit.
  res.drop_all_for_testing();
  bool whole = captions.intact();
  n = captions.visit([](const captions_t& v) { return v.size(); });
  std::printf("after dropping everything: captions intact before the visit: %s; visit saw %zu captions "
              "(built %d times)\n",
              whole ? "yes" : "no", n, caption_builds);
  print_stats("at the end:", res);
  for (auto& t : tiles) res.deallocate(t.ptr, kTileBytes);
  bool ok = wrong == 0 && lost.size() == static_cast<std::size_t>(forced) && n == kTiles && !whole &&
            caption_builds == 2;
  return ok ? 0 : 1;
}
