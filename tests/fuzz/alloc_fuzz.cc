// Fuzz target: random allocate / free / write / seal / drop / check sequences
// against a shadow model of every live block's bytes. The model mirrors each
// forced drop (zeroing the bytes of every block on the dropped pages), so it
// knows, for each block, what memory holds and whether data was lost since
// the block was last sealed. Invariants, checked after every operation:
//   * a block reported intact holds exactly what it held when last sealed
//     (the fuzzer writes before it seals, so: what was last written);
//   * a sealed block that lost a non-zero byte is reported dropped, one that
//     lost nothing intact, a never-sealed one unsealed, a freed one stale;
//   * no operation, misuse included, changes any block's bytes.
// Built two ways: with libFuzzer (tests/fuzz/run_fuzz.sh) and as a plain
// replay binary of seeded random inputs (replay_main.cc) under Bazel.
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <algorithm>
#include <memory>
#include <vector>

#include "allocator/dropalloc.h"

namespace {

constexpr size_t kPage = 4096;

[[noreturn]] void fail(const char* what, size_t op, int line) {
  fprintf(stderr, "alloc_fuzz: invariant broken at operation %zu (line %d): %s\n", op, line, what);
  abort();
}
#define FUZZ_ASSERT(cond) \
  do {                    \
    if (!(cond)) fail(#cond, op_index, __LINE__); \
  } while (0)

struct input {
  const uint8_t* data;
  size_t size;
  size_t pos = 0;
  bool empty() const { return pos >= size; }
  uint8_t u8() { return pos < size ? data[pos++] : 0; }
  uint32_t u16() { return static_cast<uint32_t>(u8()) | static_cast<uint32_t>(u8()) << 8; }
};

struct block {
  uint8_t* ptr;
  uint64_t generation;
  size_t usable;                 // the model covers the whole usable size
  std::vector<uint8_t> current;  // what memory holds now
  std::vector<uint8_t> sealed;   // what it held at the last seal
  bool ever_sealed = false;
  bool written_since_seal = false;
  bool lost = false;  // a non-zero byte was dropped since the last seal
  bool marked_dropped = false;  // the resource answered `dropped` (sticky until resealed)
  bool touched_by_drop = false;  // some page of it was dropped since the last seal
};

struct model {
  dropalloc::droppable_resource* res;
  std::vector<std::unique_ptr<block>> live;
  std::vector<std::pair<void*, uint64_t>> freed;  // stale handles
  size_t op_index = 0;

  void seal_model(block& b) {
    b.sealed = b.current;
    b.ever_sealed = true;
    b.written_since_seal = false;
    b.lost = false;
    b.marked_dropped = false;
    b.touched_by_drop = false;
  }

  // Zeroes [lo, hi) in the model of every live block, as a drop does.
  void model_drop(uintptr_t lo, uintptr_t hi) {
    for (auto& b : live) {
      auto start = reinterpret_cast<uintptr_t>(b->ptr);
      uintptr_t from = std::max(lo, start), to = std::min(hi, start + b->usable);
      if (from >= to) continue;
      b->touched_by_drop = true;
      for (uintptr_t a = from; a < to; ++a) {
        uint8_t& byte = b->current[a - start];
        if (byte != 0 && b->ever_sealed && !b->written_since_seal) b->lost = true;
        byte = 0;
      }
    }
  }

  void expect_state(block& b) {
    dropalloc::block_state s = res->check(b.ptr, b.generation);
    if (!b.ever_sealed) {
      FUZZ_ASSERT(s == dropalloc::block_state::unsealed);
    } else if (b.marked_dropped) {
      FUZZ_ASSERT(s == dropalloc::block_state::dropped);
    } else if (b.written_since_seal) {
      // Not covered until resealed; but never stale or foreign.
      FUZZ_ASSERT(s == dropalloc::block_state::intact || s == dropalloc::block_state::dropped);
      if (s == dropalloc::block_state::dropped) b.marked_dropped = true;
    } else if (b.lost) {
      FUZZ_ASSERT(s == dropalloc::block_state::dropped);
      b.marked_dropped = true;
    } else {
      FUZZ_ASSERT(s == dropalloc::block_state::intact);
      FUZZ_ASSERT(memcmp(b.ptr, b.sealed.data(), b.usable) == 0);
    }
  }

  // seal(): a sealed block whose witness word reads zero is settled as
  // dropped first, not resealed: a page was lost since the seal, or the
  // owner's later writes put a zero over the witness (the model does not
  // track where witnesses are, so after a drop or a write it accepts either);
  // everything else seals, and nothing drops meanwhile.
  // A re-seal gives the block a new generation, and the old one reads stale.
  void seal_one(block& b) {
    const uint64_t before = b.generation;
    dropalloc::block_ref h{b.ptr, b.generation};
    dropalloc::block_state s = res->seal(h);
    b.generation = h.generation;
    if (s == dropalloc::block_state::intact && b.ever_sealed) {
      FUZZ_ASSERT(b.generation > before);
      FUZZ_ASSERT(res->check(b.ptr, before) == dropalloc::block_state::stale);
    }
    if (b.marked_dropped) {  // dropped stays dropped until write_and_seal or free
      FUZZ_ASSERT(s == dropalloc::block_state::dropped);
      return;
    }
    if (b.ever_sealed && (b.touched_by_drop || b.written_since_seal) && !b.marked_dropped) {
      FUZZ_ASSERT(s == dropalloc::block_state::intact || s == dropalloc::block_state::dropped);
      if (s == dropalloc::block_state::dropped) {
        b.marked_dropped = true;
        return;
      }
    } else {
      FUZZ_ASSERT(s == dropalloc::block_state::intact);
    }
    seal_model(b);
  }

  void run(input& in) {
    const size_t sizes[] = {1, 8, 24, 100, 1000, 4096, 5000, 20000, 70000, 300000};
    const size_t aligns[] = {1, 8, 16, 64, 4096, 8192};
    while (!in.empty()) {
      ++op_index;
      uint8_t op = in.u8() % 12;
      size_t n = live.size();
      block* b = n == 0 ? nullptr : live[in.u8() % n].get();
      switch (op) {
        case 0:
        case 1: {  // allocate
          if (n >= 48) break;
          size_t size = sizes[in.u8() % 10] + in.u8();
          size_t align = aligns[in.u8() % 6];
          auto ref = res->allocate_block(size, align);
          FUZZ_ASSERT(reinterpret_cast<uintptr_t>(ref.ptr) % align == 0);
          auto nb = std::make_unique<block>();
          nb->ptr = static_cast<uint8_t*>(ref.ptr);
          nb->generation = ref.generation;
          nb->usable = res->usable_size(ref.ptr);
          FUZZ_ASSERT(nb->usable >= size);
          nb->current.assign(nb->ptr, nb->ptr + nb->usable);  // old contents stay until written
          FUZZ_ASSERT(res->check(ref.ptr, ref.generation) == dropalloc::block_state::unsealed);
          live.push_back(std::move(nb));
          break;
        }
        case 2: {  // free
          if (b == nullptr) break;
          freed.emplace_back(b->ptr, b->generation);
          res->deallocate(b->ptr, b->usable, 1);
          live.erase(std::find_if(live.begin(), live.end(), [&](auto& x) { return x.get() == b; }));
          break;
        }
        case 3:
        case 4: {  // write a run of bytes (zeros sometimes, to make zero pages)
          if (b == nullptr) break;
          size_t off = (in.u16() * 61u) % b->usable;
          size_t len = std::min(b->usable - off, static_cast<size_t>(in.u16()) * 8 + 1);
          uint8_t v = in.u8();
          if (v < 32) v = 0;
          memset(b->ptr + off, v, len);
          memset(b->current.data() + off, v, len);
          if (b->ever_sealed) b->written_since_seal = true;
          break;
        }
        case 5: {  // seal
          if (b == nullptr) break;
          seal_one(*b);
          break;
        }
        case 6: {  // drop one page of a block (and whatever else is on it)
          if (b == nullptr) break;
          size_t pages = (b->usable + kPage - 1) / kPage;
          uintptr_t page = (reinterpret_cast<uintptr_t>(b->ptr) + (in.u8() % pages) * kPage) & ~(kPage - 1);
          FUZZ_ASSERT(res->drop_for_testing(reinterpret_cast<void*>(page), kPage) == 0);
          model_drop(page, page + kPage);
          break;
        }
        case 7: {  // check one block
          if (b != nullptr) expect_state(*b);
          break;
        }
        case 8: {  // seal everything
          // Only never-sealed blocks: sealed and dropped ones keep their state.
          size_t unsealed = 0;
          for (auto& x : live) unsealed += x->ever_sealed ? 0 : 1;
          FUZZ_ASSERT(res->seal_all() == unsealed);
          for (auto& x : live) {
            if (!x->ever_sealed) seal_model(*x);
          }
          break;
        }
        case 9: {  // freed handles stay dead, even once the address is reused
          for (auto& [p, gen] : freed) {
            // A freed handle is never vouched for. It reads `foreign` rather
            // than `stale` once its arena went back to the OS and the address
            // now lies inside a block of another class (no block starts there).
            dropalloc::block_state s = res->check(p, gen);
            FUZZ_ASSERT(s == dropalloc::block_state::stale || s == dropalloc::block_state::foreign);
          }
          if (freed.size() > 64) freed.erase(freed.begin(), freed.begin() + 32);
          break;
        }
        case 10: {  // misuse: interior and foreign frees are refused, touch nothing
          int local = 0;
          uint64_t before = res->stats().misuse_refused;
          if (b != nullptr && b->usable > 8) res->deallocate(b->ptr + 8, 8, 1);
          res->deallocate(&local, sizeof local, 1);
          FUZZ_ASSERT(res->stats().misuse_refused == before + (b != nullptr && b->usable > 8 ? 2 : 1));
          break;
        }
        case 11: {  // sweep, and give empty arenas back
          auto sweep = res->check_all();
          FUZZ_ASSERT(sweep.intact + sweep.unsealed + sweep.dropped == live.size());
          res->trim();
          break;
        }
      }
      // Memory always equals the model: nothing but the fuzzer and the
      // mirrored drops changes a block. (Every 16th operation: comparing
      // every block each time would dominate the run.)
      if (op_index % 16 == 0 || in.empty()) {
        for (auto& x : live) FUZZ_ASSERT(memcmp(x->ptr, x->current.data(), x->usable) == 0);
      }
    }
    for (auto& x : live) expect_state(*x);
    for (auto& x : live) res->deallocate(x->ptr, x->usable, 1);
    live.clear();
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  // The first byte picks the configuration: thread caches on or off, the
  // droppable backing or the private fallback.
  dropalloc::resource_options opts;
  opts.thread_cache = (data[0] & 1) != 0;
  opts.force_fallback = (data[0] & 2) != 0;
  opts.empty_arena_decay_ms = 0;
  dropalloc::droppable_resource res(opts);
  model m{&res, {}, {}, 0};
  input in{data + 1, size - 1};
  m.run(in);
  if (res.stats().blocks_live != 0) fail("blocks left live", m.op_index, __LINE__);
  return 0;
}
