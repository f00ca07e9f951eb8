// Contract: "asking (check/generation/usable_size/owns/seal/write_and_seal/
// deallocate on any pointer or handle, at any moment) never crashes, hangs or
// deadlocks". write_and_seal(b, src, n) now copies the caller's src while it
// holds (1) a grace-period read section (allocator/core/grace.h: "Read
// sections are a few dozen loads") opened in heap::seal(), and (2) the seal
// stripe lock of the block (seal_check.cc, seal_block: lock_guard, then
// memcpy(start, req.src, req.n)). Reading src is reading the caller's memory,
// and that read can wait on another thread of the program: a userfaultfd
// region (lazily restored or migrated memory), a page whose fault handler
// fills it in, a file mapping on a userspace file system. While it waits:
//   * every wait_for_readers() of the process waits for it: destroying any
//     droppable_resource (heap::~heap), trim() of any resource with an empty
//     arena, the free of a large block that does not go into the large cache
//     (heap::deallocate_retired -> destroy_segment), the background purger
//     (which holds the registry lock and a class lock or the segments lock
//     while it waits: decay.cc);
//   * every free of an observed block (a handle free, or any block once
//     generation()/seal() looked at it) whose address falls on the same one of
//     the 64 seal stripes, in any resource, waits for the stripe lock
//     (retire_observed).
// If the thread that serves the page does any of these before serving it, the
// program deadlocks: the writer waits for the page, the server for the writer.
// Before 4a52cf7 the copy ran outside any lock or read section.
//
// Each case parks a write_and_seal in its src read, then lets a "materializer"
// thread do one ordinary thing with an UNRELATED resource before serving the
// page. A watchdog serves the page itself after 2 s so that the test ends; the
// test fails when it had to.
//
// Where: allocator/core/seal_check.cc heap::seal (read_section around
// seal_block) and heap::seal_block (seal lock held across memcpy of req.src);
// allocator/core/grace.cc wait_for_readers; seal_check.cc retire_observed.
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <functional>
#include <memory_resource>
#include <string>
#include <thread>
#include <vector>

#include "allocator/dropalloc.h"
#include "tests/attack7/parked_source.h"

using dropalloc::block_ref;
using dropalloc::block_state;
using dropalloc::droppable_resource;

namespace {

constexpr std::size_t kN = 3000;

// Parks res.write_and_seal(b, src, kN) in its read of src, runs `work` on a
// materializer thread that serves the page when work returns. Returns whether
// the write finished within 2 s (false: the watchdog had to serve the page).
bool parked_write_finishes(droppable_resource& res, block_ref& b, const std::function<void()>& work) {
  attack7::parked_source src(0x5a);
  REQUIRE(src.ok());
  std::atomic<bool> written{false};
  block_state result = block_state::foreign;
  std::thread writer([&] {
    result = res.write_and_seal(b, src.data(), kN);
    written.store(true);
  });
  REQUIRE(src.wait_parked(3000));
  std::atomic<bool> work_done{false};
  std::thread materializer([&] {
    work();
    work_done.store(true);
    src.serve();
  });
  auto until = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  while (!written.load() && std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  const bool finished = written.load();
  const bool work_done_in_time = work_done.load();
  if (!finished) src.serve();  // the watchdog breaks the cycle
  writer.join();
  materializer.join();
  MESSAGE("source parked by " << std::string(src.mechanism()) << "; write_and_seal "
                              << std::string(finished ? "finished" : "was still waiting after 2 s (deadlock)")
                              << ", materializer's work " << std::string(work_done_in_time ? "done" : "not done (it waits for the writer)"));
  CHECK(result == block_state::intact);
  CHECK(std::memcmp(b.ptr, src.content(), kN) == 0);
  return finished;
}

}  // namespace

TEST_CASE("a write_and_seal parked in its source read deadlocks with ordinary work on another resource") {
  droppable_resource res;
  block_ref b = res.allocate_block(kN);
  std::vector<unsigned char> first(kN, 0x11);
  REQUIRE(res.write_and_seal(b, first.data(), kN) == block_state::intact);

  SUBCASE("the materializer destroys a scratch resource of its own") {
    bool ok = parked_write_finishes(res, b, [] {
      droppable_resource scratch;
      void* q = scratch.allocate(256);
      scratch.deallocate(q, 256);
    });
    CHECK_MESSAGE(ok, "destroying an unrelated droppable_resource waits (wait_for_readers) for the parked "
                      "write_and_seal, which waits for the page the destroying thread was to serve");
  }
  SUBCASE("the materializer frees a 40 MiB scratch vector") {
    droppable_resource other;
    bool ok = parked_write_finishes(res, b, [&] {
      // A block, not a pmr vector: filling 40 MiB element by element takes
      // seconds in an unoptimised build.
      void* q = other.allocate(40u << 20);
      std::memset(q, 'x', 40u << 20);
      other.deallocate(q, 40u << 20);
    });
    CHECK_MESSAGE(ok, "the free of a large block of an unrelated resource (not kept in the large cache: it "
                      "unmaps at once) waits for the parked write_and_seal");
  }
  SUBCASE("the materializer frees its scratch blocks of another resource and trims it") {
    droppable_resource other;
    bool ok = parked_write_finishes(res, b, [&] {
      std::vector<void*> blocks;
      for (int i = 0; i < 200; ++i) blocks.push_back(other.allocate(512));
      for (void* q : blocks) other.deallocate(q, 512);
      other.trim();
    });
    CHECK_MESSAGE(ok, "trim() of an unrelated resource waits for the parked write_and_seal");
  }
  SUBCASE("the materializer frees a handle of another resource that shares the seal stripe") {
    droppable_resource other;
    std::vector<block_ref> keep;
    block_ref same;
    for (int i = 0; i < 4096 && same.ptr == nullptr; ++i) {
      block_ref r = other.allocate_block(64);
      if (attack7::seal_stripe(r.ptr) == attack7::seal_stripe(b.ptr)) {
        same = r;
      } else {
        keep.push_back(r);
      }
    }
    REQUIRE(same.ptr != nullptr);
    bool ok = parked_write_finishes(res, b, [&] { other.deallocate(same); });
    CHECK_MESSAGE(ok, "deallocate(block_ref) of an unrelated resource's block waits for the seal stripe "
                      "lock the parked write_and_seal holds (1 in 64 blocks share it)");
    for (auto& r : keep) other.deallocate(r);
  }
  res.deallocate(b);
}
