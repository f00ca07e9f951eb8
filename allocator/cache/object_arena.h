// dropalloc::object_arena: a private arena abandoned as a whole.
//
// A bump allocator over chunks taken from a shared droppable_resource. An
// object and everything it allocates can live in these chunks; when any of it
// is dropped, the arena gives every chunk back at once and the object is
// simply forgotten (its destructor never runs, its pointers may read as
// zeros). Alignment is of the address handed out, whatever the chunk's.
//
// Why chunks from a shared resource rather than one droppable_resource per
// object: a resource maps a 4 MiB arena (and its metadata) for every size
// class it touches, so a small object would cost several mmaps and a page per
// size class; a few chunks of a shared resource cost neither.
//
// Why canaries: a page dropped while the builder is still writing it (before
// seal() reads it) can come back partly rewritten, with a non-zero witness and
// torn contents. Every page the arena bumps into starts with a canary word
// written before any caller byte; nobody writes that word again, so if it reads
// zero after sealing, the page was lost at some point after the chunk was taken.
// Allocations larger than half a page get chunks of their own; those up to
// about a page still get a canary in front. Bigger ones have every page touched
// when handed out and are checked for residency (mincore) before sealing: a
// page dropped and not written again since reads as not resident. A page
// dropped and then partly rewritten by the builder before sealing is the one
// loss this cannot see.
//
// Reading what an object_arena holds after a page may have dropped is only
// safe for flat data read by copying it out and then checking intact(): a
// pointer-based object (a vector of strings, a map) in these chunks can make
// its reader or its destructor follow a zeroed pointer. The cache layer no
// longer keeps objects here (see regenerable.h); the arena is for scratch
// objects that are written, sealed, and abandoned as a whole with release().
//
// Single owner: one thread builds; after seal(), any number of threads may call
// intact() concurrently. Not a general-purpose resource: deallocate() only
// gives memory back for the most recent allocation and for big allocations.
#pragma once

#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <memory_resource>
#include <vector>

#include "allocator/core/types.h"
#include "allocator/os/os.h"
#include "allocator/pmr/droppable_resource.h"

namespace dropalloc {

class object_arena final : public std::pmr::memory_resource {
 public:
  static constexpr std::size_t kPageBytes = 4096;
  static constexpr std::size_t kMaxChunk = 64 * 1024;
  // Requests above this get a chunk of their own: bumping them into a page
  // would waste up to half of it.
  static constexpr std::size_t kMaxBumped = kPageBytes / 2;
  static constexpr std::uint64_t kCanary = 0x6361'6e61'7279'2101ull;

  explicit object_arena(droppable_resource& parent, std::size_t first_chunk = 512)
      : parent_(&parent), next_chunk_(std::clamp<std::size_t>(first_chunk, 64, kMaxChunk)) {}
  ~object_arena() override { release(); }
  object_arena(const object_arena&) = delete;
  object_arena& operator=(const object_arena&) = delete;

  // Gives every chunk back to the parent. Objects in them are abandoned.
  void release() noexcept {
    for (const chunk& c : chunks_) parent_->deallocate(c.ref.ptr, c.size);
    chunks_.clear();
    cur_ = nullptr;
    used_ = cap_ = 0;
    bytes_ = 0;
  }

  // Seals every chunk, then confirms nothing was lost since the chunks were
  // taken: true means the contents are exactly what was written.
  bool seal() noexcept {
    bool whole = true;
    // Before seal() reads them: reading a dropped page makes it resident again.
    for (const chunk& c : chunks_) {
      if (!c.probe) continue;
      std::size_t span = (c.size + kPageBytes - 1) / kPageBytes * kPageBytes;
      if (os::system_os().resident_bytes(c.ref.ptr, span) != span) whole = false;
    }
    // Through the handle: a re-seal moves a chunk's generation, which
    // intact() must check against from then on.
    for (chunk& c : chunks_) {
      if (parent_->seal(c.ref) != block_state::intact) whole = false;
    }
    for (const chunk& c : chunks_) {
      if (!canaries_alive(c)) whole = false;
    }
    return whole;
  }

  // Every chunk still intact since seal(). After a seal() that returned true,
  // each canary page has its canary as witness, so this covers them too.
  bool intact() noexcept {
    for (const chunk& c : chunks_) {
      if (!parent_->is_intact(c.ref)) return false;
    }
    return true;
  }

  std::size_t bytes() const noexcept { return bytes_; }
  std::size_t chunk_count() const noexcept { return chunks_.size(); }
  droppable_resource& parent() const noexcept { return *parent_; }

 protected:
  void* do_allocate(std::size_t bytes, std::size_t alignment) override {
    if (bytes <= kMaxBumped && alignment <= 64) {
      if (void* p = bump(bytes, alignment)) return p;
      add_chunk(std::max(next_chunk_, bytes + alignment + 8), /*bumped=*/true);
      next_chunk_ = std::min(next_chunk_ * 2, kMaxChunk);
      return bump(bytes, alignment);
    }
    std::size_t align = std::max<std::size_t>(alignment, 8);
    if (bytes + align <= kPageBytes) {
      // A chunk of at most a page never straddles one: a canary in front covers it.
      // The chunk itself is aligned to `align`, so that the caller's part,
      // `align` bytes in, is too.
      chunk& c = add_chunk(bytes + align, /*bumped=*/false, align);
      c.canaries = true;
      store_canary(c.ref.ptr);
      c.data = static_cast<std::byte*>(c.ref.ptr) + align;
      return c.data;
    }
    chunk& c = add_chunk(bytes, /*bumped=*/false, align);
    c.data = static_cast<std::byte*>(c.ref.ptr);
    // Touch every page now, so that seal() can tell a page that went before
    // it was read (no longer resident) from one the caller never wrote.
    c.probe = true;
    for (std::size_t off = 0; off < bytes; off += kPageBytes) store_canary(c.data + off);
    return c.data;
  }

  void do_deallocate(void* p, std::size_t bytes, std::size_t) override {
    if (cur_ != nullptr && static_cast<std::byte*>(p) + bytes == cur_ + used_ && p >= cur_) {
      used_ = static_cast<std::size_t>(static_cast<std::byte*>(p) - cur_);  // undo the last bump
      return;
    }
    if (bytes <= kMaxBumped) return;  // reclaimed with the arena
    // Growing containers free their old big buffers: give those back now.
    for (std::size_t i = chunks_.size(); i-- > 0;) {
      if (chunks_[i].data == p && !chunks_[i].bumped) {
        parent_->deallocate(chunks_[i].ref.ptr, chunks_[i].size);
        bytes_ -= chunks_[i].size;
        chunks_.erase(chunks_.begin() + static_cast<std::ptrdiff_t>(i));
        return;
      }
    }
  }

  bool do_is_equal(const std::pmr::memory_resource& other) const noexcept override {
    return this == &other;
  }

 private:
  struct chunk {
    block_ref ref;
    std::size_t size = 0;
    std::byte* data = nullptr;  // what the caller got (own chunks only)
    bool bumped = false;
    bool canaries = false;
    bool probe = false;         // own multi-page chunk: checked for residency when sealed
    std::size_t reach = 0;      // bumped chunks: bytes the bump pointer reached
  };

  static void store_canary(void* at) noexcept {
    __atomic_store_n(static_cast<std::uint64_t*>(at), kCanary, __ATOMIC_RELAXED);
  }
  static bool canary_ok(const void* at) noexcept {
    return __atomic_load_n(static_cast<const std::uint64_t*>(at), __ATOMIC_RELAXED) == kCanary;
  }

  bool canaries_alive(const chunk& c) const noexcept {
    if (!c.canaries) return true;
    auto* base = static_cast<const std::byte*>(c.ref.ptr);
    if (!c.bumped) return canary_ok(base);
    // Only pages the bump pointer reached hold a canary.
    std::size_t reach = c.ref.ptr == cur_ ? used_ : c.reach;
    for (std::size_t off = 0; off < reach; off += kPageBytes) {
      if (!canary_ok(base + off)) return false;
    }
    return true;
  }

  // The resource packs blocks back to back, so a block may straddle pages.
  // Chunks of at most a page are rounded up to a power of two and aligned to
  // it, so they never do; larger ones are page-aligned. Either way an offset
  // in a chunk that is a multiple of a page is a page start, which the
  // canaries and the bump pointer rely on.
  chunk& add_chunk(std::size_t size, bool bumped, std::size_t align = 8) {
    chunks_.reserve(chunks_.size() + 1);  // so that push_back below cannot throw
    if (size <= kPageBytes) {
      size = std::bit_ceil(size);
      align = std::max(align, size);
    } else {
      align = std::max(align, kPageBytes);
    }
    chunk c;
    c.ref = parent_->allocate_block(size, align);
    c.size = size;
    c.bumped = bumped;
    c.canaries = bumped;
    if (bumped) {
      for (chunk& old : chunks_) {
        if (old.ref.ptr == cur_) old.reach = used_;
      }
    }
    chunks_.push_back(c);
    bytes_ += size;
    if (bumped) {
      cur_ = static_cast<std::byte*>(c.ref.ptr);
      used_ = 0;
      cap_ = size;
    }
    return chunks_.back();
  }

  // Next fit in the current chunk, skipping each page's first word (its
  // canary) and never crossing a page boundary: chunks above a page are
  // page-aligned, smaller ones never straddle a page.
  void* bump(std::size_t bytes, std::size_t alignment) noexcept {
    if (cur_ == nullptr) return nullptr;
    // Alignment is of the address, not of the offset: a chunk is only as
    // aligned as its size class makes it (8 bytes at least).
    const auto base = reinterpret_cast<std::uintptr_t>(cur_);
    std::size_t off = used_;
    for (;;) {
      off = static_cast<std::size_t>(((base + off + alignment - 1) & ~(std::uintptr_t{alignment} - 1)) - base);
      if (off % kPageBytes == 0) {
        if (off >= cap_) return nullptr;
        store_canary(cur_ + off);  // first use of this page
        off += 8;
        continue;
      }
      std::size_t page_end = (off / kPageBytes + 1) * kPageBytes;
      if (off + bytes <= std::min(page_end, cap_)) break;
      if (page_end >= cap_) return nullptr;
      off = page_end;
    }
    used_ = off + bytes;
    return cur_ + off;
  }

  droppable_resource* parent_;
  std::vector<chunk> chunks_;  // ordinary memory: it must survive any drop
  std::byte* cur_ = nullptr;
  std::size_t used_ = 0, cap_ = 0;
  std::size_t next_chunk_;
  std::size_t bytes_ = 0;
};

}  // namespace dropalloc
