// Seal advice (MADV_FREE of sealed pages). In MAP_DROPPABLE arenas it is
// queued and given in batches, adjacent pages in one call; in the private
// fallback it is given at once, only for pages whose blocks are all sealed.
// The fake OS counts seal_pages() calls and their bytes.
#include <doctest/doctest.h>

#include <chrono>
#include <cstring>
#include <thread>
#include <vector>

#include "allocator/core/heap.h"
#include "allocator/dropalloc.h"
#include "allocator/os/fake_os.h"
#include "tests/fake_resource.h"

using dropalloc::block_ref;
using dropalloc::block_state;
using dropalloc::droppable_resource;

namespace {

constexpr std::size_t kBlock = 16 * 1024;  // a class of whole pages: blocks start on page boundaries

struct fixture {
  dropalloc::os::fake_os os;
  droppable_resource res;
  explicit fixture(dropalloc::backing b) : res(dropalloc::testing::on_fake_os(os, b)) {}
  block_ref written(int seed) {
    block_ref b = res.allocate_block(kBlock);
    std::memset(b.ptr, seed, kBlock);
    return b;
  }
};

}  // namespace

TEST_CASE("droppable arenas: seals queue their advice, and seal_all() gives it, adjacent blocks in one call") {
  fixture f(dropalloc::backing::droppable);
  std::vector<block_ref> blocks;
  for (int i = 0; i < 3; ++i) blocks.push_back(f.written(i + 1));
  // Adjacent in the arena (a fresh resource hands a class's blocks out in order).
  for (int i = 1; i < 3; ++i) {
    REQUIRE(static_cast<char*>(blocks[i].ptr) - static_cast<char*>(blocks[i - 1].ptr) == static_cast<long>(kBlock));
  }
  auto t0 = std::chrono::steady_clock::now();
  for (auto& b : blocks) REQUIRE(f.res.seal(b) == block_state::intact);
  auto took = std::chrono::steady_clock::now() - t0;
  const int before = f.os.seals.load();
  CHECK(f.res.seal_all() == 0);  // nothing live to seal; the queue is flushed
  CHECK(f.os.sealed_bytes == 3 * kBlock);
  // A queue older than its delay is flushed by the next seal: only a slow
  // run (a sanitizer, a loaded machine) may have split the three.
  if (took < std::chrono::milliseconds(5)) {
    CHECK(before == 0);
    CHECK(f.os.seals == 1);
  }
  for (auto& b : blocks) CHECK(f.res.check(b) == block_state::intact);
  for (auto& b : blocks) f.res.deallocate(b.ptr, kBlock);
}

TEST_CASE("droppable arenas: a block freed or re-sealed before its advice is not advised for that life") {
  fixture f(dropalloc::backing::droppable);
  block_ref freed = f.written(5);
  REQUIRE(f.res.seal(freed) == block_state::intact);  // queued: the queue was empty
  f.res.deallocate(freed.ptr, kBlock);
  CHECK(f.res.trim() >= 0);
  CHECK(f.os.sealed_bytes == 0);

  block_ref b = f.written(6);
  REQUIRE(f.res.seal(b) == block_state::intact);
  std::memset(b.ptr, 7, kBlock);
  const int before = f.os.seals.load();
  REQUIRE(f.res.seal(b) == block_state::intact);  // re-sealed: a new generation, queued again
  f.res.seal_all();
  // Its first seal's entry is stale (the generation moved): one advice, for the second.
  if (before == 0) CHECK(f.os.sealed_bytes == kBlock);
  CHECK(f.res.check(b) == block_state::intact);
  f.res.deallocate(b.ptr, kBlock);
}

TEST_CASE("droppable arenas: a full queue is advised by the seal that fills it") {
  fixture f(dropalloc::backing::droppable);
  std::vector<block_ref> blocks;
  for (int i = 0; i < 200; ++i) blocks.push_back(f.written(i % 250 + 1));
  for (auto& b : blocks) REQUIRE(f.res.seal(b) == block_state::intact);
  // 200 seals, a queue of at most 64 (or 1 MiB, the same here): at most 63
  // can still wait, whenever the last batch went (full, or by its age).
  CHECK(f.os.sealed_bytes >= (200 - 63) * kBlock);
  CHECK(f.os.seals <= 200);
  f.res.seal_all();
  CHECK(f.os.sealed_bytes == 200 * kBlock);
  for (auto& b : blocks) f.res.deallocate(b.ptr, kBlock);
}

TEST_CASE("droppable arenas: the queue holds at most 1 MiB of pages") {
  fixture f(dropalloc::backing::droppable);
  constexpr std::size_t kBig = 256 * 1024;
  std::vector<block_ref> blocks;
  for (int i = 0; i < 8; ++i) {
    blocks.push_back(f.res.allocate_block(kBig));
    std::memset(blocks.back().ptr, i + 1, kBig);
    REQUIRE(f.res.seal(blocks.back()) == block_state::intact);
  }
  // The fourth block filled the queue's 256 pages: advised without a flush.
  CHECK(f.os.sealed_bytes >= 4 * kBig);
  f.res.seal_all();
  CHECK(f.os.sealed_bytes == 8 * kBig);
  for (auto& b : blocks) f.res.deallocate(b.ptr, kBig);
}

TEST_CASE("droppable arenas: with a purger thread the queue is advised without a further seal") {
  // The core heap: the resource runs a purger only over the real OS.
  dropalloc::os::fake_os os;
  os.reported_backing = dropalloc::backing::droppable;
  dropalloc::core::heap_options o;
  o.os = &os;
  o.empty_arena_decay_ms = 20;
  o.background_decay = true;
  dropalloc::core::heap h(o);
  dropalloc::core::alloc_error err{};
  void* p = h.allocate(kBlock, 16, &err);
  REQUIRE(p != nullptr);
  std::memset(p, 3, kBlock);
  REQUIRE(h.seal(p) == block_state::intact);  // queued; no seal follows
  // Liveness, not speed: the purger runs a quarter of the decay time later.
  for (int i = 0; i < 1000 && os.sealed_bytes == 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  CHECK(os.sealed_bytes == kBlock);
  h.deallocate(p);
}

TEST_CASE("private fallback: each seal advises at once") {
  fixture f(dropalloc::backing::private_fallback);
  std::vector<block_ref> blocks;
  for (int i = 0; i < 3; ++i) blocks.push_back(f.written(i + 1));
  for (int i = 0; i < 3; ++i) {
    REQUIRE(f.res.seal(blocks[i]) == block_state::intact);
    CHECK(f.os.seals == i + 1);
  }
  CHECK(f.os.sealed_bytes == 3 * kBlock);
  for (auto& b : blocks) f.res.deallocate(b.ptr, kBlock);
}

TEST_CASE("droppable arenas: queued advice survives its arena going away") {
  fixture f(dropalloc::backing::droppable);
  block_ref b = f.written(9);
  REQUIRE(f.res.seal(b) == block_state::intact);
  f.res.deallocate(b.ptr, kBlock);
  CHECK(f.res.trim() > 0);  // the arena is unmapped; its queued entry is dropped unadvised
  block_ref c = f.written(10);  // perhaps at the same address, in a new arena
  REQUIRE(f.res.seal(c) == block_state::intact);
  f.res.seal_all();
  CHECK(f.os.sealed_bytes == kBlock);
  CHECK(f.res.check(c) == block_state::intact);
  f.res.deallocate(c.ptr, kBlock);
}

TEST_CASE("private fallback: a block found dropped has its pages advised again; MAP_DROPPABLE arenas do not") {
  // Reading a reclaimed page faults it back in, and where the kernel maps no
  // shared zero page that is ordinary memory nobody would give back: in the
  // fallback, finding the loss advises the block's pages once more.
  for (dropalloc::backing b : {dropalloc::backing::private_fallback, dropalloc::backing::droppable}) {
    CAPTURE(static_cast<int>(b));
    fixture f(b);
    block_ref lost = f.written(7);
    block_ref resealed = f.written(8);
    REQUIRE(f.res.seal(lost) == block_state::intact);
    REQUIRE(f.res.seal(resealed) == block_state::intact);
    CHECK(f.res.seal_all() == 0);  // gives queued advice (MAP_DROPPABLE)
    const std::size_t advised = f.os.sealed_bytes;
    REQUIRE(advised == 2 * kBlock);
    // Found by check().
    REQUIRE(f.res.drop_for_testing(lost.ptr, kBlock) == 0);
    CHECK(f.res.check(lost) == block_state::dropped);
    const bool fallback = b == dropalloc::backing::private_fallback;
    CHECK(f.os.sealed_bytes == advised + (fallback ? kBlock : 0));
    CHECK(f.res.check(lost) == block_state::dropped);  // once: the state already says so
    CHECK(f.os.sealed_bytes == advised + (fallback ? kBlock : 0));
    // Found by a re-seal.
    REQUIRE(f.res.drop_for_testing(resealed.ptr, kBlock) == 0);
    CHECK(f.res.seal(resealed) == block_state::dropped);
    CHECK(f.res.seal_all() == 0);
    CHECK(f.os.sealed_bytes == advised + (fallback ? 2 * kBlock : 0));
    f.res.deallocate(lost);
    f.res.deallocate(resealed);
  }
}

TEST_CASE("droppable arenas: small blocks sealed in address order queue one entry per 64 blocks") {
  fixture f(dropalloc::backing::droppable);
  constexpr std::size_t kSmall = 64;
  constexpr int kPages = 16;
  constexpr int kCount = kPages * 4096 / kSmall;  // 1,024 blocks: four full queues if each were an entry
  std::vector<block_ref> blocks;
  for (int i = 0; i < kCount; ++i) {
    blocks.push_back(f.res.allocate_block(kSmall));
    std::memset(blocks.back().ptr, i % 250 + 1, kSmall);
  }
  // A fresh resource hands them out in address order, page after page.
  for (int i = 1; i < kCount; ++i) {
    REQUIRE(static_cast<char*>(blocks[i].ptr) - static_cast<char*>(blocks[i - 1].ptr) == static_cast<long>(kSmall));
  }
  auto t0 = std::chrono::steady_clock::now();
  for (auto& b : blocks) REQUIRE(f.res.seal(b) == block_state::intact);
  auto took = std::chrono::steady_clock::now() - t0;
  // 16 or 17 entries of 64 B blocks: the queue (128 entries, 256 pages) is not
  // full, so nothing was advised yet, unless the run was slow enough for the
  // queue's age to flush it.
  if (took < std::chrono::milliseconds(5)) CHECK(f.os.seals == 0);
  f.res.seal_all();
  took = std::chrono::steady_clock::now() - t0;
  // Every page advised, once in all unless the queue's age split a page's
  // blocks between two batches (then that page twice).
  const auto first = reinterpret_cast<std::uintptr_t>(blocks.front().ptr) / 4096;
  const auto last = (reinterpret_cast<std::uintptr_t>(blocks.back().ptr) + kSmall - 1) / 4096;
  const std::size_t pages_bytes = (last - first + 1) * 4096;
  CHECK(f.os.sealed_bytes >= pages_bytes);
  if (took < std::chrono::milliseconds(5)) CHECK(f.os.sealed_bytes == pages_bytes);
  for (auto& b : blocks) CHECK(f.res.check(b) == block_state::intact);
  for (auto& b : blocks) f.res.deallocate(b.ptr, kSmall);
}

TEST_CASE("droppable arenas: a page whose queued block was freed is advised while another block sealed in it is") {
  for (bool free_both : {false, true}) {
    CAPTURE(free_both);
    fixture f(dropalloc::backing::droppable);
    constexpr std::size_t kSmall = 64;
    block_ref a = f.res.allocate_block(kSmall);
    block_ref b = f.res.allocate_block(kSmall);
    REQUIRE(static_cast<char*>(b.ptr) - static_cast<char*>(a.ptr) == static_cast<long>(kSmall));
    REQUIRE(reinterpret_cast<std::uintptr_t>(a.ptr) / 4096 == reinterpret_cast<std::uintptr_t>(b.ptr) / 4096);
    std::memset(a.ptr, 1, kSmall);
    std::memset(b.ptr, 2, kSmall);
    REQUIRE(f.res.seal(a) == block_state::intact);  // the queue's entry for the page
    REQUIRE(f.res.seal(b) == block_state::intact);  // held by a's entry: nothing queued
    f.res.deallocate(a);
    if (free_both) f.res.deallocate(b);
    f.res.seal_all();
    CHECK(f.os.sealed_bytes == (free_both ? 0u : 4096u));
    if (!free_both) {
      CHECK(f.res.check(b) == block_state::intact);
      f.res.deallocate(b);
    }
  }
}

TEST_CASE("the advice queue: a block within 63 after the last entry's, in its arena, is a bit of that entry") {
  using dropalloc::core::advice_place;
  using dropalloc::core::advice_queue;
  using dropalloc::core::pending_advice;
  static advice_queue q;
  static pending_advice out[advice_queue::kBatch];
  int n = 0;
  static char arenas[2];
  auto at = [](std::uint64_t gen_base, std::uint32_t idx, int arena = 0) {
    return advice_place{&arenas[arena], gen_base, idx, 100 + idx / 64, 100 + idx / 64};
  };
  CHECK(q.add(pending_advice{nullptr, 1, 0}, at(7, 10), 0, out, &n) == advice_queue::added::first);
  CHECK(q.add(pending_advice{nullptr, 2, 0}, at(7, 11), 0, out, &n) == advice_queue::added::queued);  // bit 1
  CHECK(q.add(pending_advice{nullptr, 3, 0}, at(7, 73), 0, out, &n) == advice_queue::added::queued);  // bit 63
  CHECK(q.add(pending_advice{nullptr, 4, 0}, at(7, 10), 0, out, &n) == advice_queue::added::queued);  // itself again
  CHECK(q.add(pending_advice{nullptr, 5, 0}, at(7, 74), 0, out, &n) == advice_queue::added::queued);  // 64 past 10
  CHECK(q.add(pending_advice{nullptr, 6, 0}, at(7, 60), 0, out, &n) == advice_queue::added::queued);  // before 74
  // An arena mapped where one was unmapped (a higher gen_base), and another
  // arena with the same gen_base: entries of their own.
  CHECK(q.add(pending_advice{nullptr, 7, 0}, at(8, 61), 0, out, &n) == advice_queue::added::queued);
  CHECK(q.add(pending_advice{nullptr, 8, 0}, at(8, 62, 1), 0, out, &n) == advice_queue::added::queued);
  n = q.take_all(out);
  REQUIRE(n == 6);
  CHECK(out[0].gen == 1);
  CHECK(out[0].next_sealed == ((std::uint64_t{1} << 1) | (std::uint64_t{1} << 63)));
  CHECK(out[1].gen == 4);
  CHECK(out[1].next_sealed == 0);
  CHECK(out[2].gen == 5);
  CHECK(out[3].gen == 6);
  CHECK(out[4].gen == 7);
  CHECK(out[5].gen == 8);
}
