// The finding of busy_fork_bug_test without fork: sealers whose blocks all
// share one seal stripe, and a thread emptying the queue in a loop
// (decay(false): take_all holds the queue's lock while it copies). A seal
// that finds the queue busy falls back to advise_sealed(), which gives up
// when another sealer holds the stripe. Counts sealed, unchanged blocks
// whose page was never advised after their last seal (4096 B blocks: a page
// each). Statistical: manual.
#include <doctest/doctest.h>

#include <atomic>
#include <barrier>
#include <chrono>
#include <cstdlib>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <vector>

#include "allocator/core/heap.h"
#include "allocator/os/fake_os.h"
#include "tests/attack32/recording_os.h"
#include "tests/core_heap.h"

namespace core = dropalloc::core;
namespace os = dropalloc::os;
using dropalloc::block_state;

namespace {
struct slow_os : dropalloc::testing::recording_os {
  using recording_os::recording_os;
  int settle_translations() noexcept override {  // inside seal_block, under the stripe: hold it a while
    const auto end = std::chrono::steady_clock::now() + std::chrono::microseconds(2);
    while (std::chrono::steady_clock::now() < end) {
    }
    return recording_os::settle_translations();
  }
};
std::size_t stripe(const void* p) {
  const auto a = reinterpret_cast<std::uintptr_t>(p);
  return (a >> 6 ^ a >> 12 ^ a >> 22) % 64;  // seal_check.cc, seal_lock_for
}
}  // namespace

TEST_CASE("sealers on one stripe and a queue emptied in a loop: every sealed page advised") {
  os::fake_os fake;
  fake.reported_backing = dropalloc::backing::droppable;
  slow_os rec(fake);
  core::heap h(dropalloc::testing::with_os_no_decay(&rec));
  std::vector<void*> all, same;
  for (int i = 0; i < 4096 && same.size() < 48; ++i) {
    void* p = dropalloc::testing::allocate_large(h, 4096);
    std::memset(p, 0x11, 4096);
    all.push_back(p);
    if (stripe(p) == stripe(all[0])) same.push_back(p);
  }
  REQUIRE(same.size() == 48);
  struct rec_t { std::uint64_t since = 0, gen = 0; };
  std::vector<rec_t> last(same.size());
  std::unordered_map<std::uintptr_t, std::uint64_t> adv;
  std::size_t seen = 0;
  int missing = 0, checked = 0;
  // Every round each block is sealed once; then, with the sealers waiting,
  // the queue is given (seal_all) and every block's page must have been
  // advised after that round's seal began.
  std::mutex flushing;  // held by the flusher thread across each decay(): a give in flight ends first
  auto after_round = [&]() noexcept {
    std::lock_guard<std::mutex> quiet(flushing);
    (void)h.seal_all();
    std::lock_guard<std::mutex> g(rec.lock);
    for (; seen < rec.events.size(); ++seen) {
      const auto& e = rec.events[seen];
      for (std::uintptr_t a = e.from; a < e.to; a += 4096) adv[a] = std::max(adv[a], e.seq);
    }
    for (std::size_t i = 0; i < same.size(); ++i) {
      ++checked;
      if (adv[reinterpret_cast<std::uintptr_t>(same[i])] < last[i].since) ++missing;
    }
  };
  std::barrier sync(3, after_round);
  std::atomic<bool> stop{false};
  std::vector<std::thread> ts;
  for (int t = 0; t < 3; ++t) {
    ts.emplace_back([&, t] {
      for (int round = 0; round < 5000; ++round) {
        for (std::size_t i = t; i < same.size(); i += 3) {
          last[i].since = rec.mark();
          if (h.seal(same[i], &last[i].gen) != block_state::intact) std::abort();
        }
        sync.arrive_and_wait();
      }
    });
  }
  std::thread flusher([&] {
    while (!stop.load()) {
      std::lock_guard<std::mutex> g(flushing);
      (void)h.decay(false);
    }
  });
  for (auto& t : ts) t.join();
  stop = true;
  flusher.join();
  for (std::size_t i = 0; i < same.size(); ++i) CHECK(h.check(same[i], last[i].gen) == block_state::intact);
  MESSAGE(missing << " of " << checked << " seals (" << same.size()
                  << " blocks on one stripe, 5000 rounds) never advised");
  CHECK(missing == 0);
  for (void* p : all) h.deallocate(p);
}
