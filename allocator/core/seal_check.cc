// Sealing blocks (recording witnesses, MADV_FREE) and the drop check.
#include <atomic>
#include <cerrno>
#include <cstring>
#include "allocator/core/mutex.h"

#include "allocator/core/heap.h"
#include "allocator/core/heap_internal.h"
#include "allocator/core/grace.h"
#include "allocator/core/purger.h"

namespace dropalloc::core {

using internal::read_counter;

namespace {

// Reads one 8-byte word of droppable memory. Atomic, so the compiler makes no
// assumption that it keeps its value: the kernel may zero it at any instant.
inline std::uint64_t load_word(const std::byte* p) {
  return __atomic_load_n(reinterpret_cast<const std::uint64_t*>(p), __ATOMIC_RELAXED);
}

// Orders earlier loads before later ones. TSan does not model fences (and
// gcc rejects them under -fsanitize=thread); a compiler barrier is what the
// fence amounts to on x86 anyway.
inline void load_fence() {
#if defined(__SANITIZE_THREAD__)
  asm volatile("" ::: "memory");
#else
  std::atomic_thread_fence(std::memory_order_acquire);
#endif
}

// 1 + index of a non-zero word of the portion [p, p + bytes), 0 if all are
// zero. Any non-zero word witnesses its page; the search starts at a cache
// line that depends on the page (then wraps), so the witnesses of a block's
// pages, and of blocks at the same offset of their pages, fall in different
// cache sets. From the first word of every page, the 16 witnesses of a
// 64 KiB block would share one L1 set (the set is bits 6-11 of the address),
// and check() would miss the cache at every further page.
std::uint64_t witness_word(const std::byte* p, std::size_t bytes) {
  const std::size_t words = bytes / 8;
  std::size_t from = ((reinterpret_cast<std::uintptr_t>(p) / kPage) % (kPage / 64)) * (64 / 8);
  if (from >= words) from = 0;
  for (std::size_t i = from; i < words; ++i) {
    if (load_word(p + i * 8) != 0) return i + 1;
  }
  for (std::size_t i = 0; i < from; ++i) {
    if (load_word(p + i * 8) != 0) return i + 1;
  }
  return 0;
}

// Where block idx's portion in page p of its run ends: the page's end or the
// block's, whichever comes first.
inline const std::byte* portion_end(const segment* s, std::uint32_t idx, std::size_t page) {
  const std::byte* block_end = block_start(s, idx) + block_bytes(s);
  const std::byte* page_end = s->base + (page + 1) * kPage;
  return block_end < page_end ? block_end : page_end;
}

// Whole pages of a block's tail that write_and_seal handed back to the OS
// instead of zeroing them by hand (release_tail): they read as zeros (a drop
// changes nothing there), so they need no witness and no comparison, and are
// not read, which on a kernel without a shared zero page would make each one
// resident. Empty: from == to.
struct zero_span {
  const std::byte* from = nullptr;
  const std::byte* to = nullptr;
  bool holds(const std::byte* a, const std::byte* b) const { return from < to && from <= a && b <= to; }
};

// Takes the witnesses of block idx from what it holds now: stores those of
// its later portions (a straddling block) in page_witness and returns that
// of its first portion (for the meta word). With verify_old, *lost tells
// whether a witness of the old seal (meta word m) read zero after the new
// one of its page was taken; then the rest is not taken.
std::uint64_t take_witnesses(segment* s, std::uint32_t idx, std::uint64_t m, bool verify_old, bool* lost,
                             const zero_span& released = {}) {
  const std::byte* start = block_start(s, idx);
  const page_run run = block_pages(s, idx);
  // Raised before the witnesses change (acq_rel: the stores below stay after
  // it), so a check that read any of them sees the count move. A block within
  // one page has its only witness in the meta word, which changes at once.
  if (run.straddles()) s->seal_count[run.first].fetch_add(1, std::memory_order_acq_rel);
  const std::byte* first_end = portion_end(s, idx, run.first);
  const std::uint64_t first_w =
      released.holds(start, first_end) ? 0 : witness_word(start, static_cast<std::size_t>(first_end - start));
  load_fence();  // the new witness was taken before the old one is read again
  const std::uint64_t old_first_w = meta::witness(m);
  *lost = verify_old && old_first_w != 0 && load_word(start + (old_first_w - 1) * 8) == 0;
  for (std::size_t p = run.first + 1; p <= run.last && !*lost; ++p) {
    const std::byte* page = s->base + p * kPage;
    std::uint16_t old_w = s->page_witness[p].load(std::memory_order_relaxed);
    const std::byte* end = portion_end(s, idx, p);
    auto w = released.holds(page, end)
                 ? std::uint16_t{0}
                 : static_cast<std::uint16_t>(witness_word(page, static_cast<std::size_t>(end - page)));
    load_fence();
    *lost = verify_old && old_w != 0 && load_word(page + (old_w - 1u) * 8u) == 0;
    s->page_witness[p].store(w, std::memory_order_relaxed);
  }
  return first_w;
}

// Whether [p + i, p + size) reads as zeros.
bool holds_zeros(const std::byte* p, std::size_t i, std::size_t size) {
  for (; i < size && i % 8 != 0; ++i) {
    if (p[i] != std::byte{0}) return false;
  }
  for (; i + 8 <= size; i += 8) {
    if (load_word(p + i) != 0) return false;
  }
  for (; i < size; ++i) {
    if (p[i] != std::byte{0}) return false;
  }
  return true;
}

// Whether [p, p + size) holds src[0, n) followed by zeros. Reads with
// load_word where it can, like every read of droppable memory here; the
// pages of `released` read as zeros whatever happens to them, unread.
bool holds_written(const std::byte* p, std::size_t size, const std::byte* src, std::size_t n,
                   const zero_span& released = {}) {
  if (n != 0 && std::memcmp(p, src, n) != 0) return false;
  if (released.from < released.to) {
    const auto from = static_cast<std::size_t>(released.from - p);
    const auto to = static_cast<std::size_t>(released.to - p);
    return holds_zeros(p, n, from) && holds_zeros(p, to, size);
  }
  return holds_zeros(p, n, size);
}

// Zeroes [p, p + bytes), writing only words that are not zero already: a
// tail never written (a fresh mapping's) stays untouched, not resident
// where reads map the shared zero page.
void zero_tail(std::byte* p, std::size_t bytes) {
  std::size_t i = 0;
  for (; i < bytes && (reinterpret_cast<std::uintptr_t>(p + i) % 8) != 0; ++i) p[i] = std::byte{0};
  for (; i + 8 <= bytes; i += 8) {
    if (load_word(p + i) != 0) __atomic_store_n(reinterpret_cast<std::uint64_t*>(p + i), 0, __ATOMIC_RELAXED);
  }
  for (; i < bytes; ++i) p[i] = std::byte{0};
}

// Tails of at least this many whole pages go back to the OS in one call
// rather than being read and zeroed word by word.
constexpr std::size_t kReleasedTailPages = 16;

// Zeroes [from, to), the tail of a block write_and_seal is writing: its
// whole pages, if there are enough of them, by handing them back to the OS
// (they read as zeros until written again), the rest by zero_tail. Returns
// the pages handed back (empty if none were, or the OS refused).
zero_span release_tail(os::os_interface& os, std::byte* from, std::byte* to) {
  const auto a = reinterpret_cast<std::uintptr_t>(from);
  const auto b = reinterpret_cast<std::uintptr_t>(to);
  const std::uintptr_t first = (a + kPage - 1) / kPage * kPage;
  const std::uintptr_t last = b / kPage * kPage;
  if (last <= first || (last - first) / kPage < kReleasedTailPages ||
      os.release_pages(reinterpret_cast<void*>(first), last - first) != 0) {
    zero_tail(from, static_cast<std::size_t>(to - from));
    return {};
  }
  zero_tail(from, first - a);
  zero_tail(reinterpret_cast<std::byte*>(last), b - last);
  return zero_span{reinterpret_cast<const std::byte*>(first), reinterpret_cast<const std::byte*>(last)};
}

}  // namespace

// ---- seal and check ----------------------------------------------------------------
//
// The block state machine is written out in core/types.h (namespace state).
// Sealers of one block are serialised by its seal lock; check() takes none and
// validates what it read instead: it trusts witnesses only if the block's
// state byte and meta word were the same before and after reading them (the
// witness of a block's first page is in its meta word) and, for a block that
// straddles pages, its seal count did not move while it read the witnesses of
// its later pages.

namespace {

constexpr std::size_t kSealStripes = 64;
mutex g_seal_locks[kSealStripes];

mutex& seal_lock_for(const void* block) {
  auto a = reinterpret_cast<std::uintptr_t>(block);
  return g_seal_locks[(a >> 6 ^ a >> 12 ^ a >> 22) % kSealStripes];
}

}  // namespace

void internal::lock_seal_stripes() noexcept {
  for (auto& m : g_seal_locks) m.lock();
}
void internal::unlock_seal_stripes() noexcept {
  for (auto& m : g_seal_locks) m.unlock();
}

bool retire_observed(segment* s, std::uint32_t idx, std::uint8_t* was, std::uint64_t expected_gen) noexcept {
  lock_guard guard(seal_lock_for(block_start(s, idx)));
  auto& sb = s->state[idx];
  std::uint8_t st = sb.load(std::memory_order_relaxed);
  // Under the seal lock the generation of a live observed block moves only
  // by a seal or a free, which take this lock too: it stays as read.
  if (expected_gen != 0 && (st & state::kMask) != state::kFree &&
      s->generation_of(s->meta[idx].load(std::memory_order_acquire)) != expected_gen) {
    *was = 0xff;
    return false;
  }
  do {
    if ((st & state::kMask) == state::kFree) return false;
    if (!before_state_write(sb, st)) return false;  // a handler inside its free: freed already
  } while (!sb.compare_exchange_weak(st, state::kFree, std::memory_order_acq_rel, std::memory_order_relaxed));
  // Unobserved here is possible only if someone cleared the mark, which no
  // path does; the generation moves whenever it was observed.
  if ((st & state::kObserved) != 0) bump_generation(s->meta[idx]);
  *was = st;
  return true;
}

namespace {
// Whether a page holding data was lost since the seal whose meta word is m,
// of the block at start whose pages are run: the witness of its first portion
// is in m, those of its later portions (a straddling block) in page_witness.
inline bool lost_since_seal(const segment* s, const std::byte* start, page_run run, std::uint64_t m) {
  std::uint64_t w = meta::witness(m);
  if (w != 0 && load_word(start + (w - 1) * 8) == 0) return true;
  // One page per step: the page's witness index, then its witness word. The
  // word's address is kept one word below the page, so that 1 + index (the
  // stored form) scales straight into it: a shorter loop than indexing from
  // the page number (about 20% less time per page once the witnesses no
  // longer share a cache set; alternated runs of check_hot/65536B, 262144B).
  const std::atomic<std::uint16_t>* pw = &s->page_witness[run.first + 1];
  const std::atomic<std::uint16_t>* const end = &s->page_witness[run.last + 1];
  const std::byte* below_page = s->base + (run.first + 1) * kPage - 8;
  for (; pw != end; ++pw, below_page += kPage) {
    const std::uint16_t i = pw->load(std::memory_order_relaxed);
    if (i != 0 && load_word(below_page + std::size_t{i} * 8) == 0) return true;
  }
  return false;
}
}  // namespace

bool heap::witnesses_lost(const segment* s, std::uint32_t idx, std::uint64_t m) noexcept {
  return lost_since_seal(s, block_start(s, idx), block_pages(s, idx), m);
}

// Seals block idx: the transitions live -> sealed, sealed -> sealed (re-seal)
// and, for rewritten and written_here only, dropped -> sealed, of the state
// machine in core/types.h. A sealed block whose old seal lost a page becomes
// dropped instead (plain re-seal), so no seal can turn a lost page into
// intact: the old witnesses are read once before and once more after the new
// ones were taken (a page lost in between reads zero at its old witness then).
// seal_all passes live_only: sealed and dropped blocks are left as they are.
// written_here (write_and_seal) writes req.src and zeros itself, after the
// block is unsealed, and compares before publishing the seal.
heap::seal_outcome heap::seal_block(segment* s, std::uint32_t idx, const seal_request& req,
                                    std::uint64_t* sealed_gen) noexcept {
  const seal_from from = req.from;
  auto& sb = s->state[idx];
  auto& word = s->meta[idx];
  lock_guard guard(seal_lock_for(block_start(s, idx)));
  std::uint8_t st = sb.load(std::memory_order_acquire);
  // Under the seal lock no free or seal of this block can happen (an observed
  // block is freed under it): the generation read here holds to the end.
  if (req.expected_gen != 0 &&
      ((st & state::kMask) == state::kFree || s->generation_of(word.load(std::memory_order_acquire)) != req.expected_gen)) {
    return seal_outcome::not_live;
  }
  // Observed first: from now on a free of this block takes the slow path and
  // moves the generation, which the meta-word exchange below would notice.
  while ((st & state::kMask) != state::kFree && (st & state::kObserved) == 0) {
    if (!before_state_write(sb, st)) return seal_outcome::not_live;  // a handler inside its free
    if (sb.compare_exchange_weak(st, static_cast<std::uint8_t>(st | state::kObserved),
                                 std::memory_order_acq_rel)) {
      st |= state::kObserved;
    }
  }
  // Under the seal lock only a check() changes the state byte of an observed
  // block (sealed -> dropped, when it sees a loss): a failed exchange below
  // means it did, and the block is looked at afresh.
  const bool writes = from == seal_from::written_here;
  // The caller checked n against the block it looked up; the block at p now
  // may be another (freed, its arena unmapped, another class mapped there).
  if (writes && req.n > block_bytes(s)) return seal_outcome::not_live;
  std::uint64_t m = 0;
  bool was_sealed = false;
  bool was_dropped = false;
  for (;;) {
    const std::uint8_t kind = st & state::kMask;
    if (kind == state::kFree) return seal_outcome::not_live;
    if (from == seal_from::live_only && kind != state::kLive) return seal_outcome::skipped;
    // A dropped block lost data: only a full rewrite may seal it again.
    if (kind == state::kDropped && from != seal_from::rewritten && !writes) return seal_outcome::lost;
    m = word.load(std::memory_order_acquire);
    // Settle the old seal first: the loss is the answer. (A block written
    // here is rewritten whole and verified: its old seal does not matter.)
    if (kind == state::kSealed && !writes && witnesses_lost(s, idx, m)) {
      std::uint8_t dropped = static_cast<std::uint8_t>((st & ~state::kMask) | state::kDropped);
      if (!sb.compare_exchange_strong(st, dropped, std::memory_order_acq_rel)) continue;
      drops_detected_.fetch_add(1, std::memory_order_relaxed);
      return seal_outcome::lost;
    }
    if (kind == state::kLive) break;
    // Unsealed while the contents or witnesses change: a concurrent check()
    // answers `unsealed` rather than vouch for half-written bytes or trust
    // half-written witnesses.
    std::uint8_t live = static_cast<std::uint8_t>((st & ~state::kMask) | state::kLive);
    if (!sb.compare_exchange_strong(st, live, std::memory_order_acq_rel)) continue;
    was_sealed = kind == state::kSealed;
    was_dropped = kind == state::kDropped;
    st = live;
    break;
  }
  std::byte* start = block_start(s, idx);
  const std::size_t size = block_bytes(s);
  zero_span released;
  if (writes) {
    if (req.n != 0) std::memcpy(start, req.src, req.n);
    released = release_tail(*os_, start + req.n, start + size);
  }
  // After the last write of the contents (ours, or the caller's before seal())
  // and before the witnesses are read and the seal is published: no CPU may
  // still read one of these pages through a translation from before a drop
  // that was in flight meanwhile (os.h, "stale translations"). It would see
  // the page's contents from before the drop, an older life's bytes, and
  // their non-zero witness words would pass for this seal's.
  //
  // Re-sealed (sealed -> sealed) or revived (dropped -> sealed): new contents,
  // so a new generation. A reader that copied the block before or during the
  // rewrite holds the old one, and its check after the copy must not say
  // intact over what it read, even if the rewrite put back the very same
  // bytes over a page lost unseen meanwhile (the rewrite also restores the
  // old witness words, so no look at them can tell).
  const std::uint64_t gen = meta::gen(m) + (was_sealed || was_dropped ? 1 : 0);
  if (!req.settled && os_->settle_translations() != 0) {
    // No barrier (its page could not be mapped, or the kernel refused the
    // call): witnesses read now could come from a page that is already gone.
    // The block is taken as lost: dropped, which neither seal() nor
    // seal_all() takes back (a seal_all() whose one barrier came before
    // these writes must not seal them), only a rewrite does (write_and_seal,
    // seal_rewritten), with a barrier of its own. Its generation moves as the
    // seal's would have, since its contents may have changed.
    const std::uint8_t dropped = static_cast<std::uint8_t>((st & ~state::kMask) | state::kDropped);
    if (gen != meta::gen(m) && !word.compare_exchange_strong(m, meta::make(gen, 0), std::memory_order_acq_rel)) {
      return seal_outcome::not_live;
    }
    if (!sb.compare_exchange_strong(st, dropped, std::memory_order_acq_rel)) return seal_outcome::not_live;
    if (sealed_gen != nullptr) *sealed_gen = s->generation_of(meta::make(gen, 0));
    return seal_outcome::unsettled;
  }
  // A rewritten block holds nothing of its old seal: its witnesses are moot.
  const bool verify_old = was_sealed && from == seal_from::any_but_dropped;

  bool lost = false;
  const std::uint64_t first_w = take_witnesses(s, idx, m, verify_old, &lost, released);
  if (writes && !lost) {
    // After the witnesses were taken: a page lost before shows here; one lost
    // later has a witness taken from the right bytes, which check() sees.
    load_fence();
    lost = !holds_written(start, size, req.src, req.n, released);
  }
  const std::uint64_t sealed_m = meta::make(gen, first_w);
  if (lost) {
    // What the block holds is not what was sealed or written: live -> dropped.
    // A block written here gets its new generation all the same (its old
    // contents are gone: old handles read stale), with no witness.
    std::uint8_t dropped = static_cast<std::uint8_t>((st & ~state::kMask) | state::kDropped);
    if (writes && !word.compare_exchange_strong(m, meta::make(gen, 0), std::memory_order_acq_rel)) {
      return seal_outcome::not_live;
    }
    if (!sb.compare_exchange_strong(st, dropped, std::memory_order_acq_rel)) return seal_outcome::not_live;
    drops_detected_.fetch_add(1, std::memory_order_relaxed);
    if (sealed_gen != nullptr && writes) *sealed_gen = s->generation_of(meta::make(gen, 0));
    return seal_outcome::lost;
  }
  // Fails if the block was freed meanwhile (the generation moved).
  if (!word.compare_exchange_strong(m, sealed_m, std::memory_order_acq_rel)) return seal_outcome::not_live;
  std::uint8_t sealed = static_cast<std::uint8_t>((st & ~state::kMask) | state::kSealed);
  if (!sb.compare_exchange_strong(st, sealed, std::memory_order_acq_rel)) return seal_outcome::not_live;
  if (sealed_gen != nullptr) *sealed_gen = s->generation_of(sealed_m);
  return seal_outcome::sealed;
}

block_state heap::seal(void* p, std::uint64_t* sealed_gen, std::uint64_t expected_gen) noexcept {
  return seal(p, seal_request{seal_from::any_but_dropped, expected_gen, nullptr, 0}, sealed_gen);
}
block_state heap::seal_rewritten(void* p, std::uint64_t* sealed_gen, std::uint64_t expected_gen) noexcept {
  return seal(p, seal_request{seal_from::rewritten, expected_gen, nullptr, 0}, sealed_gen);
}

std::size_t heap::seal_many(void* const* blocks, std::size_t n, block_state* answers, std::uint64_t* sealed_gens,
                            const std::uint64_t* expected_gens) noexcept {
  // One barrier for the whole batch: the caller wrote every block before this
  // call, so the barrier comes after the last write of each and before any
  // witness is read, which is all a seal needs of it (seal_block). The
  // batch's later blocks are sealed a while after it: a page dropped in
  // between is a page dropped before their seal, which reads as zeros and is
  // sealed as zeros (what seal() says of a drop before it), or one dropped
  // after their witnesses were read, which check() sees.
  const bool settled = n != 0 && os_->settle_translations() == 0;
  std::size_t intact = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const seal_request req{seal_from::any_but_dropped, expected_gens != nullptr ? expected_gens[i] : 0, nullptr, 0,
                           settled};
    std::uint64_t gen = 0;
    answers[i] = seal_in_section(blocks[i], req, &gen);
    if (sealed_gens != nullptr) sealed_gens[i] = gen;
    if (answers[i] == block_state::intact) ++intact;
  }
  purger::start_if_requested();  // as seal(): out of every read section, no lock held
  return intact;
}

block_state heap::write_and_seal(void* p, const void* src, std::size_t n, std::uint64_t* gen,
                                 std::uint64_t expected_gen) noexcept {
  *gen = 0;
  if (n != 0 && src == nullptr) return block_state::foreign;
  // n is checked against the block under its seal lock (seal_block): the
  // block at p may change until then.
  return seal(p, seal_request{seal_from::written_here, expected_gen, static_cast<const std::byte*>(src), n}, gen);
}

block_state heap::seal(void* p, const seal_request& req, std::uint64_t* sealed_gen) noexcept {
  const block_state answer = seal_in_section(p, req, sealed_gen);
  // Queued advice may have asked for the purger thread: started here, out of
  // the read section and holding no lock (starting a thread allocates).
  purger::start_if_requested();
  return answer;
}

block_state heap::seal_in_section(void* p, const seal_request& req, std::uint64_t* sealed_gen) noexcept {
  std::uint64_t gen = 0;
  if (sealed_gen != nullptr) *sealed_gen = 0;
  if (p == nullptr) return block_state::foreign;
  {
    read_section reading;
    std::uint32_t idx = 0;
    segment* s = find_block(p, &idx);
    if (s == nullptr) return block_state::foreign;
    switch (seal_block(s, idx, req, &gen)) {
      case seal_outcome::sealed: break;
      case seal_outcome::lost:
        if (sealed_gen != nullptr) *sealed_gen = gen;  // written_here only: the new life, dropped
        readvise_dropped(s, idx);
        return block_state::dropped;
      case seal_outcome::unsettled:
        if (sealed_gen != nullptr && req.from == seal_from::written_here) *sealed_gen = gen;
        return block_state::dropped;
      default: return block_state::stale;
    }
    if (sealed_gen != nullptr) *sealed_gen = gen;
    if (os_->arena_backing() == backing::droppable) {
      advise_later(s, idx, gen);
    } else {
      advise_sealed(s, idx, gen);
    }
  }
  // A page may have gone while we read it or before the advice: look again.
  // Out of the read section, so that check() takes its fast path (in ours it
  // would take the slow one); it opens its own. A block freed meanwhile, or
  // its arena unmapped, answers stale: its generation never comes back.
  return check(p, gen);
}

namespace {

// Seal locks held for the length of an advice: try_lock only (a sealer never
// waits for a second stripe, so no two can deadlock); a stripe already held
// counts as held.
class stripe_guard {
 public:
  stripe_guard() = default;
  stripe_guard(const stripe_guard&) = delete;
  stripe_guard& operator=(const stripe_guard&) = delete;
  ~stripe_guard() {
    for (int i = 0; i < n_; ++i) held_[i]->unlock();
  }
  bool hold(mutex& m) {
    for (int i = 0; i < n_; ++i) {
      if (held_[i] == &m) return true;
    }
    if (n_ == static_cast<int>(kSealStripes) || !m.try_lock()) return false;
    held_[n_++] = &m;
    return true;
  }

 private:
  mutex* held_[kSealStripes] = {};
  int n_ = 0;
};

// Whether every block on `page` other than idx is sealed or dropped, and stays
// so until `locks` go: their seal locks are held, and neither a free nor a
// re-seal of an observed block passes a seal lock. A free block or one never
// handed out could be handed out and written at any moment.
bool page_held_only_by_sealed(segment* s, std::uint32_t idx, std::size_t page, stripe_guard& locks) noexcept {
  const std::uint32_t bump = read_counter(&s->bump);
  const block_run on = page_blocks(s, page);
  for (std::uint64_t j = on.first; j <= on.last; ++j) {
    if (j == idx) continue;
    if (j >= bump) return false;
    const auto i = static_cast<std::uint32_t>(j);
    if (!locks.hold(seal_lock_for(block_start(s, i)))) return false;
    const std::uint8_t kind = s->state[i].load(std::memory_order_acquire) & state::kMask;
    if (kind != state::kSealed && kind != state::kDropped) return false;
  }
  return true;
}

}  // namespace

// MADV_FREE for the pages of a block just sealed. Where a dropped page reads
// as zeros anyway (MAP_DROPPABLE), a page the block shares is advised whole:
// a later write to any block on it un-seals it again, and its unsealed
// neighbours were never safe from a drop. In the private fallback unsealed
// data is ordinary memory the kernel never drops, so a shared page is advised
// only while every other block on it is sealed.
void heap::advise_sealed(segment* s, std::uint32_t idx, std::uint64_t gen) noexcept {
  const page_run run = block_pages(s, idx);
  std::size_t from = run.first, to = run.last + 1;
  stripe_guard locks;
  // The block itself, under its own seal lock for the length of the advice:
  // the seal that wanted it was made under that lock, since released, and
  // the block may have been freed and handed out again meanwhile, its new
  // life written but not sealed. Advise only the life that was sealed.
  // A block found dropped since its seal, at the same generation, is the same
  // life: it holds nothing worth keeping (readvise_dropped).
  const std::uint8_t kind = s->state[idx].load(std::memory_order_acquire) & state::kMask;
  if (!locks.hold(seal_lock_for(block_start(s, idx))) || (kind != state::kSealed && kind != state::kDropped) ||
      s->generation_of(s->meta[idx].load(std::memory_order_acquire)) != gen) {
    return;
  }
  if (os_->arena_backing() != backing::droppable) {
    if (!page_held_only_by_sealed(s, idx, run.first, locks)) ++from;
    if (to > from && !page_held_only_by_sealed(s, idx, run.last, locks)) --to;
  }
  if (to > from) os_->seal_pages(s->base + from * kPage, (to - from) * kPage);
}

void heap::readvise_dropped(segment* s, std::uint32_t idx) noexcept {
  if (os_->arena_backing() == backing::droppable) return;
  advise_sealed(s, idx, s->generation_of(s->meta[idx].load(std::memory_order_acquire)));
}

std::size_t heap::seal_all() noexcept {
  std::size_t sealed = 0;
  // One barrier for every block sealed below: the caller wrote them before
  // this call. A page dropped after the barrier shows in its witness (read
  // through a stale translation, the witness word holds the caller's bytes,
  // which read as zeros once the flush is done), as for a page dropped
  // after a seal.
  if (os_->settle_translations() != 0) return 0;
  flush_advice();  // the seals before this call: advised now, older first
  lock_guard guard(segments_lock_);
  const bool fallback = os_->arena_backing() != backing::droppable;
  // Advise only the pages of blocks this call sealed, one call per run of
  // them: advising a page again that was read since its seal would clear its
  // referenced bit and make the kernel drop it early.
  internal::seal_advice_runs runs(*os_);
  for (segment* s = all_; s != nullptr; s = s->all_next) {
    std::uint32_t bump = read_counter(&s->bump);
    for (std::uint32_t i = 0; i < bump; ++i) {
      if ((s->state[i].load(std::memory_order_relaxed) & state::kMask) != state::kLive) continue;
      std::uint64_t gen = 0;
      seal_outcome sealed_here;
      {
        // Not for the arena (the lock keeps it mapped) but for biased frees:
        // a tag's owner biases it again only once writers that found it
        // revoked have left the read section they wrote in (core/tag_bias.h).
        read_section reading;
        sealed_here = seal_block(s, i, seal_request{seal_from::live_only, 0, nullptr, 0, true}, &gen);
      }
      if (sealed_here != seal_outcome::sealed) continue;
      ++sealed;
      if (fallback) {
        // Unsealed data must never be given to the kernel here: each block
        // is advised as seal() advises it, only while it and every other
        // block on its shared pages are sealed.
        advise_sealed(s, i, gen);
        continue;
      }
      runs.add(s, i);
    }
  }
  runs.flush();  // under the segments lock: no arena is unmapped meanwhile
  return sealed;
}

namespace {
// The block of this heap's arenas that starts at p, as check()'s fast paths
// find it inside a fast read section. Masked lookup, as in the free fast
// path: an address outside the map's range lands on some entry, whose offset
// check rejects it.
struct located_block {
  const segment* s;
  std::uint64_t off;  // p - s->base
  std::uint32_t idx;
};
inline bool locate_block(const heap* h, const void* p, located_block* b) {
  const auto a = reinterpret_cast<std::uintptr_t>(p);
  std::uint64_t off;
  const segment* s = segment_and_offset(a, &off);
  if (DROPALLOC_UNLIKELY(s == nullptr || s->owner != h)) return false;
  const std::uint64_t i = (off * s->magic) >> 40;  // as block_index()
  // No separate check of off against the span: i < capacity and a block
  // starting at off put off inside the arena (a class arena's
  // capacity * block_size < 2^42 cannot wrap; a large arena's magic is 0, so
  // only off 0 passes), and a wrapped off (p below base) misses every product.
  if (DROPALLOC_UNLIKELY(i * s->block_size != off || i >= s->capacity)) return false;
  *b = located_block{s, off, static_cast<std::uint32_t>(i)};
  return true;
}
}  // namespace

// The common case first: a block of ours within one page, sealed at this
// generation, its witness non-zero, nothing moving meanwhile. The reads are
// check_slow's, in its order, with the same validation, but no retry and no
// other answer. Blocks over several pages go to check_pages, anything else is
// asked again, from the start, of check_slow: out of line, so that this path
// compiles to a short leaf (no loop state; one callee-saved register).
block_state heap::check(const void* p, std::uint64_t generation) noexcept {
  // Orders the caller's reads of the block before the witness reads below:
  // the safe read protocol is read, then check.
  load_fence();
  bool straddles = false;
  {
    fast_read_section reading;  // not entered (first use, nested): the slow path
    located_block b;
    if (DROPALLOC_LIKELY(reading.entered() && locate_block(this, p, &b))) {
      const segment* s = b.s;
      // (off % kPage) + block_bytes(s) <= kPage, without block_bytes()'s
      // branch: block_size is block_bytes() but for a large block past
      // 4 GiB, whose block_size 0 wraps here and sends it to check_pages.
      if (DROPALLOC_LIKELY((b.off % kPage) + (std::uint64_t{s->block_size} - 1) < kPage)) {
        const std::atomic<std::uint8_t>* sb = &s->state[b.idx];
        const std::atomic<std::uint64_t>* word = &s->meta[b.idx];
        const std::uint8_t st = sb->load(std::memory_order_acquire);
        const std::uint64_t m = word->load(std::memory_order_acquire);
        const std::uint64_t w = meta::witness(m);
        if ((st & state::kMask) == state::kSealed && s->generation_of(m) == generation &&
            (w == 0 || load_word(static_cast<const std::byte*>(p) + (w - 1) * 8) != 0)) {
          load_fence();  // the witness read above happens before the re-reads below
          if (sb->load(std::memory_order_acquire) == st && word->load(std::memory_order_acquire) == m) {
            return block_state::intact;
          }
        }
      } else {
        straddles = true;
      }
    }
  }
  return straddles ? check_pages(p, generation) : check_slow(p, generation);
}

// check() for a block over several pages, whose later portions have their
// witnesses per page and whose seal count guards them (a seal of the block
// that starts in its first page moves it). Intact only as check() answers it,
// everything else from check_slow.
__attribute__((noinline)) block_state heap::check_pages(const void* p, std::uint64_t generation) noexcept {
  {
    fast_read_section reading;
    located_block b;
    if (DROPALLOC_LIKELY(reading.entered() && locate_block(this, p, &b))) {
      const segment* s = b.s;
      const page_run run = block_pages(s, b.idx);
      std::atomic<std::uint32_t>* seals = run.straddles() ? &s->seal_count[run.first] : nullptr;
      const std::uint32_t count = seals != nullptr ? seals->load(std::memory_order_acquire) : 0;
      const std::uint8_t st = s->state[b.idx].load(std::memory_order_acquire);
      const std::uint64_t m = s->meta[b.idx].load(std::memory_order_acquire);
      if ((st & state::kMask) == state::kSealed && s->generation_of(m) == generation &&
          !lost_since_seal(s, s->base + b.off, run, m)) {
        load_fence();  // the witness reads above happen before the re-reads below
        if ((seals == nullptr || seals->load(std::memory_order_acquire) == count) &&
            s->state[b.idx].load(std::memory_order_acquire) == st &&
            s->meta[b.idx].load(std::memory_order_acquire) == m) {
          return block_state::intact;
        }
      }
    }
  }
  return check_slow(p, generation);
}

__attribute__((noinline)) block_state heap::check_slow(const void* p, std::uint64_t generation) noexcept {
  if (p == nullptr) return block_state::foreign;
  read_section reading;
  for (;;) {
    segment* s = segment_of(p);
    if (s == nullptr) {
      // Not in any arena now. A generation the process issued names a block
      // whose arena has gone back to the OS since: stale. Anything else was
      // never ours.
      return generation != 0 && generation < next_gen_base() ? block_state::stale : block_state::foreign;
    }
    std::uint32_t idx = 0;
    if (s->owner != this || !block_index(s, p, &idx)) {
      // A generation from before this arena existed (the floor is process-wide):
      // the handle named a block of an arena since unmapped, whose addresses
      // this one, of any heap, reuses.
      return generation != 0 && generation < s->gen_base ? block_state::stale : block_state::foreign;
    }
    auto& sb = s->state[idx];
    auto& word = s->meta[idx];
    // Read first: a seal that began after this read moves it; one that began
    // before left the state live until its witnesses were all written.
    const page_run run = block_pages(s, idx);
    std::atomic<std::uint32_t>* seals = run.straddles() ? &s->seal_count[run.first] : nullptr;
    const std::uint32_t count = seals != nullptr ? seals->load(std::memory_order_acquire) : 0;
    std::uint8_t st = sb.load(std::memory_order_acquire);
    std::uint64_t m = word.load(std::memory_order_acquire);
    std::uint8_t kind = st & state::kMask;
    if (kind == state::kFree || s->generation_of(m) != generation) return block_state::stale;
    if (kind == state::kLive) return block_state::unsealed;
    if (kind == state::kDropped) return block_state::dropped;
    bool lost = witnesses_lost(s, idx, m);
    load_fence();  // the witness reads above happen before the re-reads below
    if (seals != nullptr && seals->load(std::memory_order_acquire) != count) continue;
    if (lost) {
      std::uint8_t dropped = static_cast<std::uint8_t>((st & ~state::kMask) | state::kDropped);
      if (word.load(std::memory_order_acquire) == m &&
          sb.compare_exchange_strong(st, dropped, std::memory_order_acq_rel)) {
        drops_detected_.fetch_add(1, std::memory_order_relaxed);
        readvise_dropped(s, idx);
        return block_state::dropped;
      }
      continue;  // freed or resealed meanwhile: answer afresh
    }
    // Witnesses read while state and meta word stayed put belong to this seal
    // (every seal and every free of an observed block changes the meta word).
    if (sb.load(std::memory_order_acquire) != st || word.load(std::memory_order_acquire) != m) continue;
    return block_state::intact;
  }
}

sweep_result heap::check_all() noexcept {
  sweep_result r;
  lock_guard guard(segments_lock_);
  for (segment* s = all_; s != nullptr; s = s->all_next) {
    std::uint32_t bump = read_counter(&s->bump);
    for (std::uint32_t i = 0; i < bump; ++i) {
      if ((s->state[i].load(std::memory_order_acquire) & state::kMask) == state::kFree) continue;
      switch (check(block_start(s, i), s->generation_of(s->meta[i].load(std::memory_order_acquire)))) {
        case block_state::intact: ++r.intact; break;
        case block_state::unsealed: ++r.unsealed; break;
        case block_state::dropped: ++r.dropped; break;
        default: break;  // freed by another thread while we looked
      }
    }
  }
  return r;
}

int heap::drop_for_testing(void* p, std::size_t bytes) noexcept {
  read_section reading;  // the arenas stay mapped until the pages are zeroed
  // Only pages of our own arenas: zeroing anyone else's memory would corrupt it.
  auto first = reinterpret_cast<std::uintptr_t>(p) & ~(std::uintptr_t{kPage} - 1);
  auto end = reinterpret_cast<std::uintptr_t>(p) + (bytes == 0 ? 1 : bytes);
  for (auto a = first; a < end;) {
    segment* s = segment_of(reinterpret_cast<void*>(a));
    if (s == nullptr || s->owner != this) return EINVAL;
    auto seg_end = reinterpret_cast<std::uintptr_t>(s->base) + s->span;
    if (a < reinterpret_cast<std::uintptr_t>(s->base) || a >= seg_end) return EINVAL;
    a = seg_end;
  }
  return os_->drop_pages(p, bytes);
}

void heap::drop_all_for_testing() noexcept {
  lock_guard guard(segments_lock_);
  for (segment* s = all_; s != nullptr; s = s->all_next) os_->drop_pages(s->base, s->span);
}

}  // namespace dropalloc::core
