#include "tests/model/model.h"

#include <algorithm>

namespace model {

std::string name(block_state s) {
  switch (s) {
    case block_state::intact: return "intact";
    case block_state::unsealed: return "unsealed";
    case block_state::dropped: return "dropped";
    case block_state::stale: return "stale";
    case block_state::foreign: return "foreign";
  }
  return "invalid(" + std::to_string(static_cast<unsigned>(s)) + ")";
}

const char* name(life l) {
  switch (l) {
    case life::live: return "live";
    case life::sealed: return "sealed";
    case life::dropped: return "dropped";
  }
  return "?";
}

std::string describe(answers a) {
  std::string out;
  for (unsigned i = 0; i < 5; ++i) {
    if ((a & (1u << i)) == 0) continue;
    if (!out.empty()) out += "|";
    out += name(static_cast<block_state>(i));
  }
  return out.empty() ? "nothing" : out;
}

bool shadow_block::any_lost(std::uint8_t kind) const {
  return std::find(lost.begin(), lost.end(), kind) != lost.end();
}

bool generation_registry::record(std::uintptr_t addr, std::uint64_t gen) {
  std::lock_guard<std::mutex> g(lock_);
  return seen_[addr].insert(gen).second;
}

void generation_registry::clear() {
  std::lock_guard<std::mutex> g(lock_);
  seen_.clear();
}

shadow_block* shadow::add(block_ref ref, std::size_t usable, std::size_t requested,
                          std::size_t align) {
  auto b = std::make_unique<shadow_block>();
  b->ptr = static_cast<std::byte*>(ref.ptr);
  b->gen = ref.generation;
  b->usable = usable;
  b->requested = requested;
  b->align = align;
  // A new block holds whatever its previous life left: the model starts from
  // memory itself, so the first seal's expectations are exact.
  b->bytes.resize(usable);
  std::memcpy(b->bytes.data(), b->ptr, usable);
  b->lost.assign(b->pages(), kWhole);
  shadow_block* raw = b.get();
  live.push_back(std::move(b));
  index(raw);
  return raw;
}

void shadow::remove(shadow_block* b) {
  by_addr_.erase(b->addr());
  block_ref h{b->ptr, b->gen};
  // Bounded: a long run keeps the most recent few thousand freed handles.
  constexpr std::size_t kKeep = 4096;
  if (freed.size() < kKeep) {
    freed.push_back(h);
  } else {
    freed[freed_next_++ % kKeep] = h;
  }
  auto it = std::find_if(live.begin(), live.end(), [&](const auto& p) { return p.get() == b; });
  std::swap(*it, live.back());
  live.pop_back();
}

void shadow::write(shadow_block* b, std::size_t off, const std::uint8_t* src, std::size_t n) {
  if (n == 0) return;
  std::memcpy(b->bytes.data() + off, src, n);
  if (b->st == life::live) return;
  // Sealed: the owner owes a reseal. Sealed or dropped: the pages written
  // hold the owner's bytes again, whatever was lost there.
  if (b->st == life::sealed) b->dirty = true;
  std::size_t first = (b->addr() + off) / kPage - b->addr() / kPage;
  std::size_t last = (b->addr() + off + n - 1) / kPage - b->addr() / kPage;
  for (std::size_t k = first; k <= last; ++k) {
    if (b->lost[k] == kLost) b->lost[k] = kLostRewritten;
  }
}

void shadow::drop_page(std::uintptr_t page) {
  // Blocks overlapping [page, page + kPage): at most a page's worth of small
  // blocks, or one multi-page block reaching into it from below.
  auto it = by_addr_.upper_bound(page + kPage - 1);
  while (it != by_addr_.begin()) {
    --it;
    shadow_block* b = it->second;
    // Blocks never overlap, so once one ends below the page all lower ones do.
    if (b->addr() + b->usable <= page) break;
    std::uintptr_t lo = std::max(page, b->addr());
    std::uintptr_t hi = std::min(page + kPage, b->addr() + b->usable);
    std::size_t from = lo - b->addr(), to = hi - b->addr();
    std::fill(b->bytes.begin() + static_cast<std::ptrdiff_t>(from),
              b->bytes.begin() + static_cast<std::ptrdiff_t>(to), std::uint8_t{0});
    if (b->st != life::live) {
      // Data was lost only if the seal vouched for a non-zero byte here: an
      // all-zero stretch reads the same after the drop.
      bool had_data = std::any_of(b->sealed.begin() + static_cast<std::ptrdiff_t>(from),
                                  b->sealed.begin() + static_cast<std::ptrdiff_t>(to),
                                  [](std::uint8_t v) { return v != 0; });
      if (had_data) b->lost[page / kPage - b->addr() / kPage] = kLost;
    }
  }
}

answers shadow::expect_check(const shadow_block& b) const {
  switch (b.st) {
    case life::live: return only(block_state::unsealed);
    case life::dropped: return only(block_state::dropped);
    case life::sealed:
      // A page that lost sealed data and was not written since reads zeros
      // where the seal saw data: `intact` would be a lie.
      if (b.any_lost(kLost)) return only(block_state::dropped);
      // Written after the seal (the owner still owes a reseal): the library
      // cannot tell an owner's zeros from a drop, nor a rewritten lost page
      // from a whole one. Either answer keeps the promise; which bytes an
      // `intact` vouches for is the owner's business until it reseals.
      if (b.dirty) return only(block_state::intact) | only(block_state::dropped);
      return only(block_state::intact);
  }
  return 0;
}

void shadow::saw_check(shadow_block* b, block_state got) {
  // `dropped` is sticky in the library until the owner reseals.
  if (b->st == life::sealed && got == block_state::dropped) b->st = life::dropped;
}

answers shadow::expect_seal(const shadow_block& b) const {
  switch (b.st) {
    case life::live:  // seals what it holds now
      return only(block_state::intact);
    case life::dropped:
      // Stays dropped: whoever learnt of the loss (any thread's check), a
      // seal() that may be a mere repeat must not revive it.
      return only(block_state::dropped);
    case life::sealed:
      // Settles the old seal first: a lost page never becomes intact by a re-seal.
      if (b.any_lost(kLost)) return only(block_state::dropped);
      // Written since: a rewritten lost page, or an owner's zero over a
      // witness word, reads as a loss; a rewritten page may also hide one.
      if (b.dirty) return only(block_state::intact) | only(block_state::dropped);
      return only(block_state::intact);
  }
  return 0;
}

answers shadow::expect_write_and_seal(const shadow_block& b, std::size_t n) const {
  (void)n;
  // With no drop during the call, every state ends intact: the block is
  // rewritten whole (src, then zeros to its end), verified, and only then
  // sealed, whatever it held or its old seal lost.
  (void)b;
  return only(block_state::intact);
}

void shadow::saw_seal(shadow_block* b, block_state got) {
  if (got == block_state::intact) {
    // A new seal: it vouches for what the block holds now.
    b->st = life::sealed;
    b->sealed = b->bytes;
    b->dirty = false;
    std::fill(b->lost.begin(), b->lost.end(), kWhole);
  } else if (got == block_state::dropped) {
    b->st = life::dropped;
  }
}

void shadow::seal_live_now(shadow_block* b) {
  if (b->st == life::live) saw_seal(b, block_state::intact);
}

std::size_t shadow::seal_all() {
  std::size_t n = 0;
  for (auto& b : live) {
    if (b->st != life::live) continue;  // sealed and dropped blocks stay exactly as they are
    seal_live_now(b.get());
    ++n;
  }
  return n;
}

answers shadow::expect_check_in_child(const shadow_block& b, bool droppable) const {
  if (!droppable) return expect_check(b);
  if (b.st != life::sealed) return expect_check(b);
  // Every page reads zeros in the child: a seal that vouched for any non-zero
  // byte now sees it lost; one that vouched for zeros only is still right.
  bool had_data = std::any_of(b.sealed.begin(), b.sealed.end(), [](std::uint8_t v) { return v != 0; });
  return had_data ? only(block_state::dropped) : only(block_state::intact);
}

shadow_block* shadow::at(std::uintptr_t addr) {
  auto it = by_addr_.find(addr);
  return it == by_addr_.end() ? nullptr : it->second;
}

shadow_block* shadow::containing(std::uintptr_t addr) {
  auto it = by_addr_.upper_bound(addr);
  if (it == by_addr_.begin()) return nullptr;
  --it;
  return addr < it->first + it->second->usable ? it->second : nullptr;
}

bool shadow::overlaps(std::uintptr_t addr, std::size_t n) {
  if (containing(addr) != nullptr) return true;
  auto it = by_addr_.upper_bound(addr);
  return it != by_addr_.end() && it->first < addr + n;
}

std::size_t shadow::live_bytes() const {
  std::size_t n = 0;
  for (const auto& b : live) n += b->usable;
  return n;
}

}  // namespace model
