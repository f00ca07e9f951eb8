#include "tests/model/ops.h"

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <stdexcept>
#include <thread>

namespace model {

namespace {

std::string hex(const void* p) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%p", p);
  return buf;
}

// First differing offset of two byte ranges, or -1.
long first_diff(const std::uint8_t* a, const std::uint8_t* b, std::size_t n) {
  if (n == 0 || std::memcmp(a, b, n) == 0) return -1;  // the common case, fast even under sanitizers
  for (std::size_t i = 0; i < n; ++i) {
    if (a[i] != b[i]) return static_cast<long>(i);
  }
  return -1;
}

}  // namespace

runner::runner(dropalloc::droppable_resource& res, generation_registry& gens, failure_log& log,
               std::uint64_t seed, runner_options opt)
    : res_(res), gens_(gens), log_(log), seed_(seed), opt_(opt), r_(seed) {
}

void runner::note(const std::string& what) {
  recent_.push_back("#" + std::to_string(op_no_) + " " + what);
  if (recent_.size() > 14) recent_.pop_front();
}

std::string runner::where(const shadow_block& b) const {
  return "block " + hex(b.ptr) + " gen " + std::to_string(b.gen) + " usable " +
         std::to_string(b.usable) + " model " + name(b.st) + (b.dirty ? "+written-since-seal" : "") +
         (b.any_lost(kLost) ? " lost-page" : "") + (b.any_lost(kLostRewritten) ? " lost-then-rewritten" : "");
}

void runner::expect(bool ok, const char* oracle, const std::string& detail) {
  if (ok) return;
  std::string msg = "ORACLE " + std::string(oracle) + " fired: seed=" + std::to_string(seed_) +
                    " thread=" + std::to_string(opt_.thread_id) + " op=" + std::to_string(op_no_) +
                    "\n  " + detail + "\n  recent operations (oldest first):";
  for (const auto& r : recent_) msg += "\n    " + r;
  log_.add(oracle, msg);
  if (!opt_.keep_going) failed_ = true;
}

// Memory must hold what the model says: nothing but the owner's writes and
// forced drops may change a block.
void runner::compare_memory(const shadow_block& b, const char* oracle) {
  long d = first_diff(reinterpret_cast<const std::uint8_t*>(b.ptr), b.bytes.data(), b.usable);
  expect(d < 0, oracle, where(b) + ": memory differs from the model at offset " + std::to_string(d));
}

// ---- choices --------------------------------------------------------------------

shadow_block* runner::pick() {
  if (m_.live.empty()) return nullptr;
  return m_.live[r_.below(m_.live.size())].get();
}

// 8 B .. 1 MiB, skewed small: most programs allocate many small blocks and a
// few big ones; the big ones cover multi-page and large (own mapping) blocks.
std::size_t runner::pick_size() {
  std::uint64_t u = r_.below(1000);
  if (u < 550) return 8 + r_.below(249);
  if (u < 820) return 257 + r_.below(4096 - 257 + 1);
  if (u < 960) return 4097 + r_.below(64 * 1024 - 4097 + 1);
  return 64 * 1024 + r_.below(1024 * 1024 - 64 * 1024 + 1);
}

// Contents that move witnesses around: random bytes, long zero prefixes,
// sparse data, all zeros.
void runner::fill(std::vector<std::uint8_t>& v) {
  std::uint64_t mode = r_.below(10);
  std::size_t n = v.size();
  if (mode == 0) {
    std::fill(v.begin(), v.end(), std::uint8_t{0});
    return;
  }
  std::uint64_t x = r_.next() | 1;
  for (std::size_t i = 0; i < n; i += 8) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;  // xorshift: cheap bytes for MiB writes
    std::memcpy(v.data() + i, &x, std::min<std::size_t>(8, n - i));
  }
  if (mode <= 3 && n > 0) {  // zero prefix up to the whole first pages
    std::size_t z = r_.below(std::min<std::size_t>(n, 3 * kPage) + 1);
    std::fill(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(z), std::uint8_t{0});
  } else if (mode <= 5) {  // sparse: mostly zeros
    for (std::size_t i = 0; i < n; ++i) {
      if ((v[i] & 31) != 0) v[i] = 0;
    }
  }
}

// In single-threaded runs any page of a block may be dropped (neighbours on
// it lose theirs too, and the model follows). Others' blocks may share pages
// with ours in multi-threaded runs, so there only pages wholly inside the
// block are dropped.
bool runner::droppable_page(const shadow_block& b, std::uintptr_t page) const {
  if (single()) return true;
  return page >= b.addr() && page + kPage <= b.addr() + b.usable;
}

std::uintptr_t runner::pick_page(const shadow_block& b) {
  std::uintptr_t page = b.first_page() + r_.below(b.pages()) * kPage;
  return droppable_page(b, page) ? page : 0;
}

void runner::force_drop(std::uintptr_t page) {
  int rc = res_.drop_for_testing(reinterpret_cast<void*>(page), kPage);
  expect(rc == 0, "drop_for_testing-refused-own-page", "page " + hex(reinterpret_cast<void*>(page)) +
                                                           " rc " + std::to_string(rc));
  m_.drop_page(page);
}

// A seal_all that ran since the owner last touched b sealed it if it was live,
// with what it held then, which is what it holds now: between two operations
// of its owner nobody writes or drops b.
void runner::sync(shadow_block* b) {
  if (single()) return;
  std::uint64_t e = opt_.mt->epoch.load(std::memory_order_acquire);
  if (e != b->synced_epoch) m_.seal_live_now(b);
  b->synced_epoch = e;
}

void runner::publish(shadow_block* b) {
  if (single() || opt_.slots == 0) return;
  int s = opt_.first_slot + static_cast<int>(r_.below(static_cast<std::uint64_t>(opt_.slots)));
  auto& slot = opt_.mt->board[static_cast<std::size_t>(s)];
  std::lock_guard<std::mutex> g(slot.m);
  if (!slot.freed) return;  // occupied by another of our blocks
  slot.ref = block_ref{b->ptr, b->gen};
  slot.freed = false;
  b->slot = s;
}

// A re-seal or a revival (any seal of a block sealed or dropped before) gives
// the block a new generation: the owner takes it, and so does its published
// handle. Readers who took the old one get `stale`, which is honest.
void runner::refresh_generation(shadow_block* b) {
  std::uint64_t g = res_.generation(b->ptr);
  expect(g >= b->gen, "generation-went-back", where(*b) + ": now " + std::to_string(g));
  if (g == b->gen) return;
  note("  new generation " + std::to_string(b->gen) + " -> " + std::to_string(g));
  b->gen = g;
  if (b->slot < 0) return;
  auto& slot = opt_.mt->board[static_cast<std::size_t>(b->slot)];
  std::lock_guard<std::mutex> lock(slot.m);
  slot.ref.generation = g;
}

void runner::unpublish(shadow_block* b) {
  if (b->slot < 0) return;
  auto& slot = opt_.mt->board[static_cast<std::size_t>(b->slot)];
  std::lock_guard<std::mutex> g(slot.m);
  slot.freed = true;  // deallocate has returned: checkers must now see stale
}

// The shared side of the seal_all lock. glibc's rwlock prefers readers, and
// the owners hold it nearly all the time: without this a sweeper waiting for
// it would hardly ever get in, and seal_all would race the owners too rarely.
std::shared_lock<std::shared_mutex> runner::owner_lock() {
  if (single()) return {};
  while (opt_.mt->sweeper_waiting.load(std::memory_order_acquire)) std::this_thread::yield();
  return std::shared_lock<std::shared_mutex>(opt_.mt->seal_lock);
}

// ---- operations -------------------------------------------------------------------

void runner::step() {
  ++op_no_;
  std::uint64_t u = r_.below(1000);
  shadow_block* b = pick();
  bool full = m_.live.size() >= opt_.max_live || m_.live_bytes() >= opt_.max_live_bytes;
  if (b == nullptr || (u < 170 && !full)) return op_allocate();
  if (b->st == life::dropped && r_.chance(15)) return op_rewrite_dropped(b);
  if (u < 170) return op_free(b);
  if (u < 310) return op_write(b);
  if (u < 400) return op_seal(b);
  if (u < 480) return op_write_and_seal(b);
  if (u < 580) return op_drop(b);
  if (u < 740) return op_check(b);
  if (u < 830) return op_free(b);
  if (u < 860) return single() ? op_seal_all() : op_check(b);
  if (u < 880) return single() ? op_check_all() : op_check(b);
  if (u < 900) return single() ? op_double_free() : op_stale_probe();
  if (u < 930) return op_stale_probe();
  if (u < 955) return op_foreign_probe();
  if (u < 975) {
    note("trim");
    res_.trim();
    return;
  }
  if (u < 978) return op_free_all_and_trim();
  if (u < 980 && single() && opt_.fork_allowed) return op_fork();
  return op_check(b);
}

void runner::op_allocate() {
  std::size_t size = pick_size();
  static constexpr std::size_t kAligns[] = {8, 32, 64, 256, 4096};
  std::size_t align = r_.chance(70) ? alignof(std::max_align_t) : kAligns[r_.below(5)];
  note("allocate_block(" + std::to_string(size) + ", " + std::to_string(align) + ")");
  block_ref ref = res_.allocate_block(size, align);
  auto a = reinterpret_cast<std::uintptr_t>(ref.ptr);
  expect(ref.ptr != nullptr && a % align == 0, "allocate-misaligned", "ptr " + hex(ref.ptr));
  if (ref.ptr == nullptr) return;
  expect(ref.generation != 0, "generation-zero-issued", "ptr " + hex(ref.ptr));
  std::size_t usable = res_.usable_size(ref.ptr);
  expect(usable >= size, "usable-size-short", "ptr " + hex(ref.ptr) + " usable " + std::to_string(usable));
  usable = std::max(usable, size);
  expect(res_.generation(ref.ptr) == ref.generation, "generation-mismatch", "ptr " + hex(ref.ptr));
  expect(gens_.record(a, ref.generation), "generation-repeated",
         "address " + hex(ref.ptr) + " got generation " + std::to_string(ref.generation) + " a second time");
  expect(!m_.overlaps(a, usable), "allocate-overlaps-live-block",
         "new block " + hex(ref.ptr) + "+" + std::to_string(usable) + " overlaps a live block");
  if (failed_) return;
  if (single()) {
    shadow_block* b = m_.add(ref, usable, size, align);
    block_state s = res_.check(b->ptr, b->gen);
    expect(s == block_state::unsealed, "new-block-not-unsealed", where(*b) + " check said " + name(s));
    return;
  }
  // Multi-threaded: a seal_all racing the allocation may have sealed the new
  // block with whatever its last life left in it. Under the shared lock
  // (no seal_all now) memory is stable: take it as the model's bytes and ask.
  auto lk = owner_lock();
  shadow_block* b = m_.add(ref, usable, size, align);
  b->synced_epoch = opt_.mt->epoch.load(std::memory_order_acquire);
  block_state s = res_.check(b->ptr, b->gen);
  expect(s == block_state::unsealed || s == block_state::intact, "new-block-state",
         where(*b) + " check said " + name(s));
  if (s == block_state::intact) m_.seal_live_now(b);
  lk.unlock();
  publish(b);
}

void runner::op_write(shadow_block* b) {
  bool full = r_.chance(35);
  std::size_t off = full ? 0 : r_.below(b->usable);
  std::size_t len = full ? b->usable : 1 + r_.below(std::min<std::size_t>(b->usable - off, 3 * kPage));
  std::vector<std::uint8_t> data(len);
  fill(data);
  auto lk = owner_lock();
  std::shared_lock<std::shared_mutex> wlk;
  if (!single()) wlk = std::shared_lock<std::shared_mutex>(opt_.mt->write_lock);
  sync(b);
  note("write " + where(*b) + " [" + std::to_string(off) + ", +" + std::to_string(len) + ")");
  // In chunks, with a forced drop of one of its pages between two chunks now
  // and then: a drop in the middle of a write.
  std::size_t chunks = 1 + r_.below(4), done = 0;
  for (std::size_t c = 0; c < chunks && done < len; ++c) {
    std::size_t n = c + 1 == chunks ? len - done : r_.below(len - done + 1);
    std::memcpy(b->ptr + off + done, data.data() + done, n);
    m_.write(b, off + done, data.data() + done, n);
    done += n;
    if (c + 1 < chunks && r_.chance(30)) {
      if (std::uintptr_t page = pick_page(*b)) {
        note("  drop mid-write " + hex(reinterpret_cast<void*>(page)));
        force_drop(page);
      }
    }
  }
  if (single()) compare_memory(*b, "memory-differs-after-write");
}

// The owner learnt its block was dropped and rewrites all of it, then says so
// with seal_rewritten(): that seals what the block holds (a page dropped in
// the middle of the rewrite is sealed as the zeros it then holds).
void runner::op_rewrite_dropped(shadow_block* b) {
  std::vector<std::uint8_t> data(b->usable);
  fill(data);
  auto lk = owner_lock();
  std::shared_lock<std::shared_mutex> wlk;
  if (!single()) wlk = std::shared_lock<std::shared_mutex>(opt_.mt->write_lock);
  sync(b);
  note("rewrite all of dropped " + where(*b) + ", then seal_rewritten");
  std::size_t half = r_.below(b->usable + 1);
  std::memcpy(b->ptr, data.data(), half);
  m_.write(b, 0, data.data(), half);
  if (r_.chance(20)) {
    if (std::uintptr_t page = pick_page(*b)) {
      note("  drop mid-rewrite " + hex(reinterpret_cast<void*>(page)));
      force_drop(page);
    }
  }
  std::memcpy(b->ptr + half, data.data() + half, b->usable - half);
  m_.write(b, half, data.data() + half, b->usable - half);
  block_state got = res_.seal_rewritten(b->ptr);
  refresh_generation(b);
  expect(got == block_state::intact, "seal_rewritten-answer",
         where(*b) + ": seal_rewritten() after a full rewrite said " + name(got));
  m_.saw_seal(b, got);
  compare_memory(*b, "memory-differs-after-seal_rewritten");
}

void runner::op_seal(shadow_block* b) {
  if (r_.chance(35)) return op_seal_many(b);
  auto lk = owner_lock();
  sync(b);
  note("seal " + where(*b));
  const seal_before before = before_seal(b);
  block_state got = res_.seal(b->ptr);
  after_seal(b, before, got, "seal()");
}

// seal() of b and up to three more of this runner's blocks in one
// seal_many(): each answer must be what seal() may answer for it alone.
void runner::op_seal_many(shadow_block* b) {
  auto lk = owner_lock();
  std::vector<shadow_block*> batch{b};
  const std::uint64_t more = r_.below(4);
  for (std::uint64_t k = 0; k < more; ++k) {
    shadow_block* o = pick();
    if (std::find(batch.begin(), batch.end(), o) == batch.end()) batch.push_back(o);
  }
  std::vector<void*> ptrs;
  std::vector<seal_before> before;
  std::string what = "seal_many";
  for (shadow_block* x : batch) {
    sync(x);
    before.push_back(before_seal(x));
    ptrs.push_back(x->ptr);
    what += " " + where(*x);
  }
  note(what);
  std::vector<block_state> got(ptrs.size(), block_state::foreign);
  std::size_t intact = res_.seal_many(ptrs, got);
  expect(intact == static_cast<std::size_t>(std::count(got.begin(), got.end(), block_state::intact)),
         "seal-many-count", "returned " + std::to_string(intact));
  for (std::size_t i = 0; i < batch.size(); ++i) after_seal(batch[i], before[i], got[i], "seal_many()");
}

runner::seal_before runner::before_seal(shadow_block* b) {
  return seal_before{m_.expect_seal(*b), b->st == model::life::sealed, b->gen};
}

void runner::after_seal(shadow_block* b, const seal_before& before, block_state got, const char* call) {
  refresh_generation(b);
  expect(allows(before.want, got), "seal-answer",
         where(*b) + ": " + call + " said " + name(got) + ", the promise allows " + describe(before.want));
  if (before.resealing && got == block_state::intact) {
    // New contents may hide a page lost unseen: the old generation must not
    // vouch for them.
    expect(b->gen > before.gen, "reseal-kept-generation", where(*b) + ": re-sealed at the same generation");
    block_state old = res_.check(b->ptr, before.gen);
    expect(old == block_state::stale, "reseal-old-handle-not-stale",
           where(*b) + ": the generation before the re-seal said " + name(old));
  }
  m_.saw_seal(b, got);
  compare_memory(*b, "memory-differs-after-seal");
}

void runner::op_write_and_seal(shadow_block* b) {
  auto lk = owner_lock();
  std::shared_lock<std::shared_mutex> wlk;
  if (!single()) wlk = std::shared_lock<std::shared_mutex>(opt_.mt->write_lock);
  sync(b);
  bool too_long = r_.chance(4);
  std::size_t n = too_long ? b->usable + 1 + r_.below(64) : r_.below(b->usable + 1);
  std::vector<std::uint8_t> src(n);
  fill(src);
  note("write_and_seal " + where(*b) + " n=" + std::to_string(n));
  bool threw = false;
  block_state got = block_state::foreign;
  try {
    got = res_.write_and_seal(b->ptr, src.data(), n);
  } catch (const std::length_error&) {
    threw = true;
  }
  if (too_long) {
    expect(threw, "write_and_seal-oversize-no-length_error",
           where(*b) + ": n=" + std::to_string(n) + " > usable returned " + name(got) + " instead of throwing");
    compare_memory(*b, "write_and_seal-oversize-copied");
    return;
  }
  expect(!threw, "write_and_seal-threw", where(*b) + ": n=" + std::to_string(n) + " <= usable threw");
  refresh_generation(b);
  answers want = m_.expect_write_and_seal(*b, n);
  m_.write(b, 0, src.data(), n);
  if ((got == block_state::intact || got == block_state::dropped) && n < b->usable) {
    // The block holds src, then zeros to its end: the tail is written too.
    std::vector<std::uint8_t> zeros(b->usable - n, 0);
    if (got == block_state::intact) {
      expect(std::memcmp(b->ptr + n, zeros.data(), zeros.size()) == 0, "write_and_seal-tail",
             where(*b) + ": bytes after n=" + std::to_string(n) + " are not zeroed");
    }
    m_.write(b, n, zeros.data(), zeros.size());
  }
  expect(allows(want, got), "write_and_seal-answer",
         where(*b) + ": write_and_seal said " + name(got) + ", the promise allows " + describe(want));
  if (got == block_state::intact) {
    expect(first_diff(reinterpret_cast<const std::uint8_t*>(b->ptr), src.data(), n) < 0,
           "write_and_seal-intact-but-bytes-differ", where(*b));
  }
  m_.saw_seal(b, got);
  compare_memory(*b, "memory-differs-after-write_and_seal");
}

void runner::op_drop(shadow_block* b) {
  auto lk = owner_lock();
  sync(b);
  std::size_t drops = 1 + r_.below(std::min<std::size_t>(b->pages(), 3));
  for (std::size_t i = 0; i < drops; ++i) {
    std::uintptr_t page = pick_page(*b);
    if (page == 0) continue;
    note("drop page " + hex(reinterpret_cast<void*>(page)) + " of " + where(*b));
    force_drop(page);
  }
}

// Reads the block out in chunks (sometimes with a forced drop in the middle of
// the copy), then checks it: the safe read protocol. If the check says intact,
// what was read must be what was sealed.
void runner::op_check(shadow_block* b) {
  auto lk = owner_lock();
  sync(b);
  note("copy out and check " + where(*b));
  std::vector<std::uint8_t> copy(b->usable);
  std::size_t half = r_.below(b->usable + 1);
  std::memcpy(copy.data(), b->ptr, half);
  if (r_.chance(25)) {
    if (std::uintptr_t page = pick_page(*b)) {
      note("  drop mid-copy " + hex(reinterpret_cast<void*>(page)));
      force_drop(page);
    }
  }
  std::memcpy(copy.data() + half, b->ptr + half, b->usable - half);
  answers want = m_.expect_check(*b);
  block_state got = res_.check(b->ptr, b->gen);
  expect(allows(want, got), "check-answer",
         where(*b) + ": check() said " + name(got) + ", the promise allows " + describe(want));
  if (got == block_state::intact && shadow::intact_means_sealed_bytes(*b)) {
    long d = first_diff(copy.data(), b->sealed.data(), b->usable);
    expect(d < 0, "intact-but-bytes-differ-from-seal",
           where(*b) + ": check() said intact but the bytes read differ from the sealed ones at offset " +
               std::to_string(d));
  }
  m_.saw_check(b, got);
  compare_memory(*b, "memory-differs-at-check");
}

void runner::op_free(shadow_block* b) {
  note("deallocate " + where(*b));
  block_ref h{b->ptr, b->gen};
  std::size_t requested = b->requested, align = b->align;
  {
    // Frees take no lock: they may race a seal_all on purpose.
    auto lk = owner_lock();
    sync(b);
    compare_memory(*b, "memory-differs-before-free");
  }
  res_.deallocate(h.ptr, requested, align);
  unpublish(b);
  m_.remove(b);
  block_state s = res_.check(h.ptr, h.generation);
  expect(s == block_state::stale, "freed-handle-not-stale",
         "freed " + hex(h.ptr) + " gen " + std::to_string(h.generation) + ": check said " + name(s));
}

void runner::op_seal_all() {
  note("seal_all");
  std::size_t want = m_.seal_all();
  std::size_t got = res_.seal_all();
  expect(got == want, "seal_all-count",
         "seal_all() sealed " + std::to_string(got) + " blocks, but only " + std::to_string(want) +
             " were live (sealed and dropped blocks must be left as they are)");
}

void runner::op_check_all() {
  note("check_all");
  std::uint64_t lo[3] = {0, 0, 0}, hi[3] = {0, 0, 0};  // intact, unsealed, dropped
  for (const auto& b : m_.live) {
    answers a = m_.expect_check(*b);
    block_state ss[3] = {block_state::intact, block_state::unsealed, block_state::dropped};
    for (int i = 0; i < 3; ++i) {
      if (allows(a, ss[i])) {
        ++hi[i];
        if (a == only(ss[i])) ++lo[i];
      }
    }
  }
  dropalloc::core::sweep_result r = res_.check_all();
  std::uint64_t got[3] = {r.intact, r.unsealed, r.dropped};
  const char* names[3] = {"intact", "unsealed", "dropped"};
  for (int i = 0; i < 3; ++i) {
    expect(got[i] >= lo[i] && got[i] <= hi[i], "check_all-counts",
           std::string("check_all counted ") + std::to_string(got[i]) + " " + names[i] + ", the model allows " +
               std::to_string(lo[i]) + ".." + std::to_string(hi[i]));
  }
  // check_all marks what it found dropped; ask again where the model allowed two answers.
  for (auto& b : m_.live) {
    answers a = m_.expect_check(*b);
    if (a == only(block_state::dropped)) m_.saw_check(b.get(), block_state::dropped);
    if ((a & (a - 1)) == 0) continue;
    block_state s = res_.check(b->ptr, b->gen);
    expect(allows(a, s), "check-answer-after-check_all", where(*b) + ": check said " + name(s));
    m_.saw_check(b.get(), s);
  }
  expect(res_.stats().blocks_live == m_.live.size(), "stats-blocks_live",
         "stats().blocks_live " + std::to_string(res_.stats().blocks_live) + " but the owner holds " +
             std::to_string(m_.live.size()));
}

// Frees a handle again whose address no live block starts at: it must be
// refused, counted, and free nothing.
void runner::op_double_free() {
  if (m_.freed.empty()) return;
  block_ref h = m_.freed[r_.below(m_.freed.size())];
  if (m_.at(reinterpret_cast<std::uintptr_t>(h.ptr)) != nullptr) return;  // handed out again: a legal free
  note("double deallocate " + hex(h.ptr) + " gen " + std::to_string(h.generation));
  dropalloc::resource_stats before = res_.stats();
  res_.deallocate(h.ptr, 8, 1);
  dropalloc::resource_stats after = res_.stats();
  expect(after.misuse_refused == before.misuse_refused + 1, "double-free-not-refused",
         "misuse_refused " + std::to_string(before.misuse_refused) + " -> " + std::to_string(after.misuse_refused));
  expect(after.blocks_live == before.blocks_live, "double-free-freed-something",
         "blocks_live " + std::to_string(before.blocks_live) + " -> " + std::to_string(after.blocks_live));
  if (shadow_block* inside = m_.containing(reinterpret_cast<std::uintptr_t>(h.ptr))) {
    compare_memory(*inside, "memory-differs-after-double-free");
  }
}

void runner::op_stale_probe() {
  if (m_.freed.empty()) return;
  block_ref h = m_.freed[r_.below(m_.freed.size())];
  note("check freed handle " + hex(h.ptr) + " gen " + std::to_string(h.generation));
  block_state s = res_.check(h.ptr, h.generation);
  expect(s == block_state::stale, "freed-handle-not-stale",
         "freed " + hex(h.ptr) + " gen " + std::to_string(h.generation) + ": check said " + name(s));
  // write_and_seal of a freed block: nothing to write into. Only where no block
  // of ours holds the address now (in threaded runs another owner may).
  if (!single() || m_.containing(reinterpret_cast<std::uintptr_t>(h.ptr)) != nullptr) return;
  std::uint8_t src[8] = {1, 2, 3, 4, 5, 6, 7, 8};
  s = res_.write_and_seal(h.ptr, src, sizeof src);
  // stale while its arena is mapped; once trim or the decay unmapped it the
  // address is simply not ours, so foreign is allowed too.
  expect(s == block_state::stale || s == block_state::foreign, "write_and_seal-freed-block",
         "write_and_seal(freed " + hex(h.ptr) + ") said " + name(s));
}

void runner::op_foreign_probe() {
  note("foreign probes");
  std::uint64_t g = r_.next() | 1;
  block_state s = res_.check(nullptr, 0);
  expect(s == block_state::foreign, "nullptr-not-foreign", "check(nullptr, 0) said " + name(s));
  s = res_.check(nullptr, g);
  expect(s == block_state::foreign, "nullptr-not-foreign", "check(nullptr, " + std::to_string(g) + ") said " + name(s));
  std::uint64_t local[4] = {1, 2, 3, 4};
  s = res_.check(local, 0);
  expect(s == block_state::foreign, "stack-pointer-not-foreign", "check(&local, 0) said " + name(s));
  std::uint8_t src[16] = {9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9};
  s = res_.write_and_seal(local, src, 8);
  expect(s == block_state::foreign && local[0] == 1, "write_and_seal-foreign",
         "write_and_seal(&local) said " + name(s));
  expect(res_.drop_for_testing(local, 8) == EINVAL && local[0] == 1, "drop_for_testing-foreign",
         "drop_for_testing(&local) did not refuse");
  shadow_block* b = pick();
  if (b == nullptr || b->usable < 2) return;
  auto lk = owner_lock();
  sync(b);
  std::byte* inner = b->ptr + 1 + r_.below(b->usable - 1);
  s = res_.check(inner, 0);
  expect(s == block_state::foreign, "interior-pointer-not-foreign",
         "check(" + hex(inner) + " inside " + where(*b) + ", 0) said " + name(s));
  s = res_.write_and_seal(inner, src, 1);
  expect(s == block_state::foreign, "write_and_seal-interior",
         "write_and_seal(interior of " + where(*b) + ") said " + name(s));
  compare_memory(*b, "write_and_seal-interior-wrote");
}

void runner::op_free_all_and_trim() {
  note("free all, trim, allocate again (address reuse)");
  free_all();
  res_.trim();
  for (int i = 0; i < 4 && !failed_; ++i) op_allocate();
}

void runner::free_all() {
  while (!m_.live.empty() && !failed_) op_free(m_.live.back().get());
}

// A child sees droppable arenas as zeros: sealed blocks that held data read
// dropped there, nothing crashes, freed handles stay stale. The child reports
// through a pipe and its exit status.
void runner::op_fork() {
  note("fork");
  // Droppable arenas read as zeros in a child, and so do the private
  // fallback's (MADV_WIPEONFORK): only ordinary memory is inherited.
  droppable_ = res_.arena_backing() != dropalloc::backing::ordinary;
  int fds[2];
  if (pipe(fds) != 0) return;
  pid_t pid = fork();
  if (pid < 0) {
    close(fds[0]);
    close(fds[1]);
    return;
  }
  if (pid == 0) {
    close(fds[0]);
    std::string err;
    for (const auto& b : m_.live) {
      answers want = m_.expect_check_in_child(*b, droppable_);
      block_state got = res_.check(b->ptr, b->gen);
      if (!allows(want, got)) {
        err += "child: " + where(*b) + " check said " + name(got) + ", allowed " + describe(want) + "\n";
      }
      if (droppable_) {
        bool zeros = std::all_of(b->ptr, b->ptr + b->usable, [](std::byte v) { return v == std::byte{0}; });
        if (!zeros) err += "child: " + where(*b) + " does not read as zeros\n";
      }
      if (err.size() > 2000) break;
    }
    for (const auto& h : m_.freed) {
      block_state got = res_.check(h.ptr, h.generation);
      if (got != block_state::stale) err += "child: freed " + hex(h.ptr) + " said " + name(got) + "\n";
      if (err.size() > 2000) break;
    }
    if (res_.check(nullptr, 0) != block_state::foreign) err += "child: check(nullptr) not foreign\n";
    if (!err.empty()) (void)!write(fds[1], err.data(), err.size());
    close(fds[1]);
    _exit(err.empty() ? 0 : 3);
  }
  close(fds[1]);
  std::string out;
  char buf[512];
  ssize_t n;
  while ((n = read(fds[0], buf, sizeof buf)) > 0) out.append(buf, static_cast<std::size_t>(n));
  close(fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  expect(WIFEXITED(status) && WEXITSTATUS(status) == 0, "fork-child",
         "child status " + std::to_string(status) + (WIFSIGNALED(status) ? " (killed by signal " +
         std::to_string(WTERMSIG(status)) + ")" : "") + "\n" + out);
}

}  // namespace model
