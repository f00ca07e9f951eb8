// Readers against write_and_seal's released tail (b7fd46a), with a model.
//
// Per block, a writer rewrites it with write_and_seal again and again, with
// lengths short then long then short (so each call releases the pages the
// last one filled, or fills the pages the last one released), recording
// generation -> (seed, n) for every call. Readers copy the whole block and
// check it with a generation taken from the writer's last call or from
// generation(p): every copy judged `intact` must equal the value of that
// generation, then zeros. A dropper zeroes random pages of the blocks; the
// OS layer (a fake, wrapped) drops pages of the block being written just
// before and after each release and at each barrier, and sometimes fails
// the release (after zeroing part of the range, or none). Blocks: 160 KiB
// and 256 KiB class blocks, a 300 KB large block, and, with neighbours, a
// 68 KiB class block. Runs on the fake reporting either backing, and on the
// real OS (the _fallback target forces private memory there).
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "allocator/dropalloc.h"
#include "tests/attack18/common.h"

using attack18::fill;
using attack18::holds;
using attack18::kPage;
using attack18::name;
using dropalloc::block_ref;
using dropalloc::block_state;
using dropalloc::droppable_resource;

namespace {

double seconds() {
  const char* s = std::getenv("MODEL_SECONDS");
  return s != nullptr ? std::atof(s) : 3.0;
}

struct life {
  std::uint64_t seed;
  std::size_t n;
  bool holes;
};

struct slot {
  block_ref b;
  std::size_t size = 0;
  std::atomic<std::uint64_t> last_gen{0};
  std::mutex m;
  std::unordered_map<std::uint64_t, life> lives;
};

struct counts {
  std::atomic<long> writes{0}, written_intact{0}, written_dropped{0}, copies{0}, copies_intact{0}, wrong{0},
      unknown_gen{0}, drops{0};
};

std::size_t pick_n(std::mt19937_64& rng, std::size_t size, long k) {
  const std::size_t short_n[] = {0, 1, 8, kPage - 1, kPage, kPage + 1, 3 * kPage + 5};
  switch (k % 4) {
    case 0: return short_n[rng() % 7];
    case 1: return size - (rng() % 3) * kPage - (rng() % 2);  // long
    case 2: return rng() % (size + 1);
    default: {
      // so that 15, 16 or 17 whole pages follow
      const std::size_t tail = (15 + rng() % 3) * kPage + (rng() % 2 ? 0 : rng() % kPage);
      return tail <= size ? size - tail : 0;
    }
  }
}

void run_model(droppable_resource& res, attack18::steered_os* os, const char* label) {
  std::vector<std::size_t> sizes = {160u << 10, 256u << 10, 300000, 68u << 10};
  std::vector<slot> slots(sizes.size());
  std::vector<block_ref> neighbours;
  std::vector<std::vector<unsigned char>> neighbour_bytes;
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    if (sizes[i] == (68u << 10)) {
      neighbours.push_back(res.allocate_block(sizes[i]));
      slots[i].b = res.allocate_block(sizes[i]);
      neighbours.push_back(res.allocate_block(sizes[i]));
    } else {
      slots[i].b = res.allocate_block(sizes[i]);
    }
    slots[i].size = res.usable_size(slots[i].b.ptr);
  }
  for (auto& nb : neighbours) {
    neighbour_bytes.emplace_back(res.usable_size(nb.ptr));
    fill(neighbour_bytes.back().data(), neighbour_bytes.back().size(), 4242);
    REQUIRE(res.write_and_seal(nb, neighbour_bytes.back().data(), neighbour_bytes.back().size()) ==
            block_state::intact);
  }
  // A first life for every block before any reader looks: a fresh block's
  // first seal keeps its generation (see first_seal_copy_bug_test), so the
  // model below only has lives that each begin with a new generation.
  for (auto& s : slots) {
    std::vector<unsigned char> first(s.size);
    fill(first.data(), s.size, 31337, false);
    REQUIRE(res.write_and_seal(s.b, first.data(), s.size) == block_state::intact);
    s.lives[s.b.generation] = life{31337, s.size, false};
    s.last_gen.store(s.b.generation);
  }
  counts c;
  std::atomic<bool> stop{false};
  std::atomic<void*> writing{nullptr};
  std::atomic<std::size_t> writing_size{0};
  std::atomic<std::uint64_t> hook_rng{12345};
  auto drop_some = [&](int odds) {
    void* p = writing.load();
    std::size_t sz = writing_size.load();
    if (p == nullptr || sz == 0) return;
    std::uint64_t x = hook_rng.fetch_add(0x9e3779b97f4a7c15ull) * 0x2545f4914f6cdd1dull;
    if ((x >> 60) % odds != 0) return;
    std::size_t pg = (x >> 8) % ((sz + kPage - 1) / kPage);
    (void)res.drop_for_testing(static_cast<char*>(p) + pg * kPage, 1);
    ++c.drops;
  };
  if (os != nullptr) {
    os->before_release = [&](void*, std::size_t) { drop_some(3); };
    os->after_release = [&](void*, std::size_t) { drop_some(3); };
    os->on_settle = [&] { drop_some(4); };
  }
  // One writer per slot would race the hooks' `writing`: one writer for all.
  std::thread writer([&] {
    std::mt19937_64 rng(7);
    std::vector<unsigned char> src(1u << 20);
    long k = 0;
    while (!stop.load()) {
      slot& s = slots[rng() % slots.size()];
      const std::size_t n = pick_n(rng, s.size, k++);
      const std::uint64_t seed = rng();
      const bool holes = (seed & 3) == 0;
      fill(src.data(), n, seed, holes);
      if (os != nullptr) {
        const std::uint64_t f = rng() % 8;
        os->release_error.store(f == 0 ? EIO : 0);
        os->zero_pages_before_failing.store(f == 0 ? rng() % 20 : 0);
      }
      writing_size.store(s.size);
      writing.store(s.b.ptr);
      const block_state st = res.write_and_seal(s.b, src.data(), n);
      writing.store(nullptr);
      ++c.writes;
      if (st == block_state::intact) ++c.written_intact;
      if (st == block_state::dropped) ++c.written_dropped;
      if (st == block_state::intact && !holds(static_cast<unsigned char*>(s.b.ptr), s.size, src.data(), n)) {
        // Not a race: only this thread writes, and drops only zero.
        // Intact over bytes that differ, unless a drop came after the check.
        std::vector<unsigned char> copy(static_cast<unsigned char*>(s.b.ptr),
                                        static_cast<unsigned char*>(s.b.ptr) + s.size);
        if (!holds(copy.data(), s.size, src.data(), n) && res.check(s.b) == block_state::intact) {
          ++c.wrong;
          MESSAGE("writer: intact over other bytes, n ", n, " size ", s.size);
        }
      }
      {
        std::lock_guard<std::mutex> g(s.m);
        s.lives[s.b.generation] = life{seed, n, holes};
      }
      s.last_gen.store(s.b.generation);
    }
  });
  std::vector<std::thread> readers;
  for (int r = 0; r < 2; ++r) {
    readers.emplace_back([&, r] {
      std::mt19937_64 rng(100 + r);
      std::vector<unsigned char> copy(1u << 20), want(1u << 20);
      while (!stop.load()) {
        slot& s = slots[rng() % slots.size()];
        const std::uint64_t g = rng() % 2 ? s.last_gen.load() : res.generation(s.b.ptr);
        if (g == 0) continue;
        std::memcpy(copy.data(), s.b.ptr, s.size);
        ++c.copies;
        if (res.check(s.b.ptr, g) != block_state::intact) continue;
        ++c.copies_intact;
        life l{};
        bool found = false;
        for (int tries = 0; tries < 20000 && !found; ++tries) {
          {
            std::lock_guard<std::mutex> lk(s.m);
            auto it = s.lives.find(g);
            if (it != s.lives.end()) {
              l = it->second;
              found = true;
            }
          }
          if (!found) std::this_thread::sleep_for(std::chrono::microseconds(100));
        }
        if (!found) {
          ++c.unknown_gen;
          continue;
        }
        fill(want.data(), l.n, l.seed, l.holes);
        if (!holds(copy.data(), s.size, want.data(), l.n)) {
          if (++c.wrong <= 5) {
            std::size_t first = 0, last = 0, zeros = 0, count = 0;
            for (std::size_t i = 0; i < s.size; ++i) {
              const unsigned char w = i < l.n ? want[i] : 0;
              if (copy[i] != w) {
                if (count++ == 0) first = i;
                last = i;
                zeros += copy[i] == 0;
              }
            }
            MESSAGE("reader: intact copy differs, size ", s.size, " n ", l.n, " holes ", l.holes, " gen ", g,
                    ": ", count, " bytes from ", first, " (page ", first / kPage, ") to ", last, " (page ",
                    last / kPage, "), ", zeros, " of them zero in the copy");
          }
        }
      }
    });
  }
  std::thread dropper([&] {
    std::mt19937_64 rng(999);
    while (!stop.load()) {
      slot& s = slots[rng() % slots.size()];
      const std::size_t pg = rng() % ((s.size + kPage - 1) / kPage);
      (void)res.drop_for_testing(static_cast<char*>(s.b.ptr) + pg * kPage, 1);
      ++c.drops;
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
  });
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds()));
  stop.store(true);
  writer.join();
  for (auto& t : readers) t.join();
  dropper.join();
  if (os != nullptr) {
    os->before_release = nullptr;
    os->after_release = nullptr;
    os->on_settle = nullptr;
  }
  for (std::size_t i = 0; i < neighbours.size(); ++i) {
    // Neighbours are dropped only through the dropper's pages of the slots
    // they share none with (class blocks of 68 KiB are page multiples).
    const block_state st = res.check(neighbours[i]);
    if (st == block_state::intact) {
      CHECK(holds(static_cast<unsigned char*>(neighbours[i].ptr), neighbour_bytes[i].size(),
                  neighbour_bytes[i].data(), neighbour_bytes[i].size()));
    }
  }
  MESSAGE(std::string(label), ": ", c.writes.load(), " writes (", c.written_intact.load(), " intact, ", c.written_dropped.load(),
          " dropped), ", c.copies.load(), " copies, ", c.copies_intact.load(), " intact, ", c.drops.load(),
          " drops, ", os != nullptr ? os->releases.load() : -1, " releases (",
          os != nullptr ? os->failed_releases.load() : -1, " failed)");
  CHECK(c.wrong.load() == 0);
  CHECK(c.unknown_gen.load() == 0);
  for (auto& s : slots) res.deallocate(s.b.ptr, s.size);
  for (auto& nb : neighbours) res.deallocate(nb.ptr, res.usable_size(nb.ptr));
}

}  // namespace

TEST_CASE("model: released tails, readers, drops, failing releases (fake OS)") {
  for (auto backing : {dropalloc::backing::droppable, dropalloc::backing::private_fallback}) {
    attack18::steered_os os;
    os.inner.reported_backing = backing;
    dropalloc::resource_options o;
    o.os = &os;
    droppable_resource res(o);
    run_model(res, &os, backing == dropalloc::backing::droppable ? "fake droppable" : "fake fallback");
  }
}

TEST_CASE("model: released tails, readers, drops (real OS)") {
  droppable_resource res;
  run_model(res, nullptr, res.stats().droppable ? "real droppable" : "real fallback");
}
