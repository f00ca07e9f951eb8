// Witness words searched from a page-dependent cache line (then wrapping):
// every page portion whose only non-zero word (or byte) sits at the start
// line, just before or after it, at the portion's first or last word, must
// still be witnessed, so a drop of that page turns check() to `dropped`.
// Every size class (and large blocks), blocks that start mid-page, at page
// starts and at arena ends; sealed by seal_rewritten, seal, write_and_seal
// (also with a released tail), seal_many and seal_all.
#include <doctest/doctest.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <random>
#include <set>
#include <span>
#include <vector>

#include "allocator/core/size_class.h"
#include "allocator/dropalloc.h"

using dropalloc::block_ref;
using dropalloc::block_state;
using dropalloc::droppable_resource;

namespace {

constexpr std::uintptr_t kPg = 4096;

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr bool kSanitized = true;
#else
constexpr bool kSanitized = false;
#endif

// The word the search starts at for the portion beginning at address a and
// holding `words` words (computed here independently of the allocator).
std::size_t start_word(std::uintptr_t a, std::size_t words) {
  std::size_t from = ((a / kPg) % (kPg / 64)) * 8;
  return from >= words ? 0 : from;
}

struct portion {
  std::uintptr_t from;  // address of its first byte
  std::uintptr_t to;    // one past its last byte
  std::size_t words() const { return (to - from) / 8; }
};

std::vector<portion> portions_of(const void* p, std::size_t size) {
  std::vector<portion> out;
  const auto a = reinterpret_cast<std::uintptr_t>(p);
  for (std::uintptr_t page = a / kPg; page <= (a + size - 1) / kPg; ++page) {
    out.push_back({std::max(page * kPg, a), std::min((page + 1) * kPg, a + size)});
  }
  return out;
}

// Word indices worth testing in a portion of `words` words starting at a.
std::vector<std::size_t> interesting_words(std::uintptr_t a, std::size_t words, std::mt19937_64& rng) {
  std::set<std::size_t> w;
  const std::size_t from = start_word(a, words);
  const std::size_t raw_from = ((a / kPg) % (kPg / 64)) * 8;
  for (std::size_t c : {std::size_t{0}, std::size_t{1}, from, from + 1, from + 7, from + 8, words - 1, words - 2,
                        raw_from, raw_from + 1}) {
    if (c < words) w.insert(c);
  }
  if (from > 0) w.insert(from - 1);
  if (raw_from > 0 && raw_from - 1 < words) w.insert(raw_from - 1);
  w.insert(rng() % words);
  return {w.begin(), w.end()};
}

void put_word(std::uintptr_t at, std::uint64_t v) { std::memcpy(reinterpret_cast<void*>(at), &v, 8); }

// Which portions of a block of n portions to test at every interesting word.
std::vector<std::size_t> chosen_portions(std::size_t n, std::mt19937_64& rng) {
  std::set<std::size_t> s;
  for (std::size_t i : {std::size_t{0}, std::size_t{1}, n - 2, n - 1}) {
    if (i < n) s.insert(i);
  }
  if (n > 2) s.insert(1 + rng() % (n - 2));
  return {s.begin(), s.end()};
}

// For block p of `size` bytes (all zero on entry, left zero on return): the
// only non-zero word (or byte) of the block at each interesting position of
// chosen portions; seal by `how`; intact; drop that word's page; dropped.
enum class sealer { rewritten, plain_fresh, write_and_seal, seal_many };

void sweep_block(droppable_resource& res, block_ref& b, std::size_t size, sealer how, std::mt19937_64& rng) {
  const auto ps = portions_of(b.ptr, size);
  const auto a = reinterpret_cast<std::uintptr_t>(b.ptr);
  std::vector<unsigned char> src;
  for (std::size_t pi : chosen_portions(ps.size(), rng)) {
    const portion& po = ps[pi];
    REQUIRE(po.words() >= 1);
    for (std::size_t w : interesting_words(po.from, po.words(), rng)) {
      for (int byte : {-1, 0, 7}) {
        CAPTURE(size);
        CAPTURE(a % kPg);
        CAPTURE(pi);
        CAPTURE(w);
        CAPTURE(byte);
        CAPTURE(static_cast<int>(how));
        const std::uintptr_t at = po.from + w * 8;
        std::uint64_t v = byte < 0 ? 0x0102030405060708ull : std::uint64_t{0x5a} << (8 * byte);
        block_state got = block_state::foreign;
        switch (how) {
          case sealer::rewritten:
            put_word(at, v);
            got = res.seal_rewritten(b);
            break;
          case sealer::plain_fresh: {
            // A fresh life each time: free and take a block of the same size
            // until the same address comes back (thread cache: LIFO).
            res.deallocate(b);
            b = res.allocate_block(size, 8);
            REQUIRE(reinterpret_cast<std::uintptr_t>(b.ptr) == a);
            std::memset(b.ptr, 0, size);
            put_word(at, v);
            got = res.seal(b);
            break;
          }
          case sealer::write_and_seal: {
            // Only up to the word: the rest is zeroed by the call (and
            // handed back to the OS if it holds 16 or more whole pages).
            const std::size_t n = at + 8 - a;
            src.assign(n, 0);
            std::memcpy(src.data() + (at - a), &v, 8);
            got = res.write_and_seal(b, src.data(), n);
            break;
          }
          case sealer::seal_many: {
            // seal_many seals as seal() does: a dropped block stays dropped,
            // so a fresh life each time, as for plain_fresh.
            res.deallocate(b);
            b = res.allocate_block(size, 8);
            REQUIRE(reinterpret_cast<std::uintptr_t>(b.ptr) == a);
            std::memset(b.ptr, 0, size);
            put_word(at, v);
            block_state ans[1];
            block_ref refs[1] = {b};
            res.seal_many(std::span<block_ref>(refs, 1), std::span<block_state>(ans, 1));
            b = refs[0];
            got = ans[0];
            break;
          }
        }
        REQUIRE(got == block_state::intact);
        REQUIRE(res.check(b) == block_state::intact);
        // A page of the block holding no data may go: nothing lost.
        for (const portion& other : ps) {
          if (other.from / kPg != at / kPg && rng() % 8 == 0) {
            REQUIRE(res.drop_for_testing(reinterpret_cast<void*>(other.from / kPg * kPg), kPg) == 0);
          }
        }
        REQUIRE(res.drop_for_testing(reinterpret_cast<void*>(at / kPg * kPg), kPg) == 0);
        REQUIRE(res.check(b) == block_state::dropped);
        REQUIRE(res.check(b) == block_state::dropped);
        // The block is all zeros again (the drop took the only word).
        REQUIRE(std::all_of(static_cast<unsigned char*>(b.ptr), static_cast<unsigned char*>(b.ptr) + size,
                            [](unsigned char c) { return c == 0; }));
      }
    }
  }
}

std::vector<std::size_t> sizes_to_test() {
  std::vector<std::size_t> sizes;
  for (const auto& row : dropalloc::core::kSizeClasses) {
    if (!kSanitized || sizes.size() % 4 == 0) sizes.push_back(row.size);
  }
  // Large blocks: a page multiple, and one a word past it.
  sizes.push_back(256 * 1024 + 8);
  sizes.push_back(300 * 1024);
  return sizes;
}

// Blocks of `size` from res whose starts cover: page-aligned, mid-page, and
// (for classes) the last block of an arena.
std::vector<block_ref> sample_blocks(droppable_resource& res, std::size_t size, std::vector<block_ref>& keep) {
  std::vector<block_ref> out;
  bool aligned = false, mid = false;
  for (int i = 0; i < 64 && out.size() < 3; ++i) {
    block_ref b = res.allocate_block(size, 8);
    keep.push_back(b);
    std::memset(b.ptr, 0, size);
    const bool at_page = reinterpret_cast<std::uintptr_t>(b.ptr) % kPg == 0;
    if ((at_page && !aligned) || (!at_page && !mid) || i == 63) {
      (at_page ? aligned : mid) = true;
      out.push_back(b);
    }
  }
  return out;
}

void run_all(droppable_resource& res, sealer how, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  for (std::size_t size : sizes_to_test()) {
    std::vector<block_ref> keep;
    if ((how == sealer::plain_fresh || how == sealer::seal_many) && size > 64 * 1024) continue;  // thread-cached: LIFO reuse
    for (block_ref b : sample_blocks(res, size, keep)) {
      // The pmr handle is what keep holds: replace it there after sweeping.
      block_ref mine = b;
      sweep_block(res, mine, size, how, rng);
      for (auto& k : keep) {
        if (k.ptr == mine.ptr) k = mine;
      }
    }
    for (auto& k : keep) res.deallocate(k);
  }
}

}  // namespace

TEST_CASE("every class: the only non-zero word of a portion, wherever, witnesses it (seal_rewritten)") {
  droppable_resource res;
  run_all(res, sealer::rewritten, 1);
}

TEST_CASE("every class: the only non-zero word of a portion witnesses it (seal of a fresh life)") {
  droppable_resource res;
  run_all(res, sealer::plain_fresh, 2);
}

TEST_CASE("every class: the only non-zero word of a portion witnesses it (write_and_seal, tail released)") {
  droppable_resource res;
  run_all(res, sealer::write_and_seal, 3);
}

TEST_CASE("every class: the only non-zero word of a portion witnesses it (seal_many)") {
  droppable_resource res;
  run_all(res, sealer::seal_many, 4);
}

TEST_CASE("seal_all: blocks whose only word sits at, before or after the start line") {
  droppable_resource res;
  std::mt19937_64 rng(5);
  for (std::size_t size : {std::size_t{8}, std::size_t{3072}, std::size_t{4160}, std::size_t{4608},
                           std::size_t{5120}, std::size_t{12288}, std::size_t{65536}, std::size_t{73728},
                           std::size_t{266240}}) {
    CAPTURE(size);
    for (int round = 0; round < 6; ++round) {
      std::vector<block_ref> blocks;
      std::vector<std::uintptr_t> words;
      for (int i = 0; i < 16; ++i) {
        block_ref b = res.allocate_block(size, 8);
        std::memset(b.ptr, 0, size);
        const auto ps = portions_of(b.ptr, size);
        const portion& po = ps[rng() % ps.size()];
        const std::size_t from = start_word(po.from, po.words());
        std::size_t w = 0;
        switch (round) {
          case 0: w = from; break;
          case 1: w = from == 0 ? po.words() - 1 : from - 1; break;
          case 2: w = from + 1 < po.words() ? from + 1 : 0; break;
          case 3: w = po.words() - 1; break;
          case 4: w = 0; break;
          default: w = rng() % po.words(); break;
        }
        put_word(po.from + w * 8, 0x8000000000000000ull);
        blocks.push_back(b);
        words.push_back(po.from + w * 8);
      }
      REQUIRE(res.seal_all() >= blocks.size());
      for (std::size_t i = 0; i < blocks.size(); ++i) {
        blocks[i].generation = res.generation(blocks[i].ptr);
        REQUIRE(res.check(blocks[i]) == block_state::intact);
      }
      for (std::size_t i = 0; i < blocks.size(); ++i) {
        REQUIRE(res.drop_for_testing(reinterpret_cast<void*>(words[i] / kPg * kPg), kPg) == 0);
      }
      for (std::size_t i = 0; i < blocks.size(); ++i) {
        CAPTURE(i);
        CAPTURE(words[i] % kPg);
        // A neighbour's drop may also have taken this block's page: dropped
        // either way, since every block had its word dropped.
        REQUIRE(res.check(blocks[i]) == block_state::dropped);
      }
      for (auto& b : blocks) res.deallocate(b);
    }
  }
}

TEST_CASE("re-seal: old witnesses at wrapped positions are verified again") {
  // Sealed with words at the start line and before it (witness: the one at
  // the line), rewritten so that only the word before it stays: seal() must
  // find the old witness zero and answer dropped (documented: a write that
  // zeroes the witness looks like a loss), never intact over a page whose
  // old witness it no longer reads. Then the other order: the word before
  // the line stays non-zero, the line's word changes value: intact, and a
  // drop of that page afterwards shows.
  droppable_resource res;
  std::mt19937_64 rng(6);
  for (std::size_t size : {std::size_t{4096}, std::size_t{5120}, std::size_t{65536}, std::size_t{4352}}) {
    for (int i = 0; i < 8; ++i) {
      CAPTURE(size);
      CAPTURE(i);
      block_ref b = res.allocate_block(size, 8);
      std::memset(b.ptr, 0, size);
      const auto ps = portions_of(b.ptr, size);
      const portion& po = ps[rng() % ps.size()];
      const std::size_t from = start_word(po.from, po.words());
      if (from == 0) {
        res.deallocate(b);
        continue;
      }
      const std::uintptr_t line = po.from + from * 8, before = line - 8;
      put_word(line, 1);
      put_word(before, 2);
      REQUIRE(res.seal(b) == block_state::intact);
      // Change the value at the line: still non-zero; a plain re-seal.
      put_word(line, 3);
      REQUIRE(res.seal(b) == block_state::intact);
      REQUIRE(res.check(b) == block_state::intact);
      // Drop the page, then re-seal without rewriting: the old witness
      // reads zero, so dropped, never intact.
      REQUIRE(res.drop_for_testing(reinterpret_cast<void*>(line / kPg * kPg), kPg) == 0);
      const std::uint64_t old_gen = b.generation;
      REQUIRE(res.seal(b) == block_state::dropped);
      REQUIRE(res.check(b.ptr, old_gen) != block_state::intact);
      REQUIRE(res.check(b) != block_state::intact);
      res.deallocate(b);
    }
  }
}
