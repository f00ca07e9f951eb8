#include "allocator/pmr/droppable_resource.h"
#include "allocator/core/stats_report.h"

#include <algorithm>
#include <cstdio>
#include <ostream>
#include <cstring>
#include <memory>
#include <stdexcept>

namespace dropalloc {

allocation_error::allocation_error(std::size_t bytes, std::size_t alignment,
                                   core::alloc_error reason) noexcept
    : reason_(reason) {
  snprintf(message_, sizeof message_,
           "dropalloc: cannot allocate %zu bytes aligned to %zu: %s", bytes, alignment,
           core::to_string(reason));
}

core::heap_options droppable_resource::heap_options_for(const resource_options& options) {
  core::heap_options h;
  h.os = options.os != nullptr ? options.os
         : options.force_fallback ? &os::fallback_os()
                                  : &os::system_os();
  h.thread_cache = options.thread_cache;
  h.name = options.name;
  h.empty_arena_decay_ms = options.empty_arena_decay_ms;
  // A test's OS layer is called from the test's threads only: no purger
  // thread calling into it behind the test's back.
  h.background_decay = options.background_decay && options.os == nullptr;
  return h;
}

droppable_resource::droppable_resource(const resource_options& options)
    : heap_(heap_options_for(options)) {}

namespace {
bool to_stream(void* ctx, const char* text, std::size_t n) noexcept {
  auto* out = static_cast<std::ostream*>(ctx);
  // The report's sink must not throw; a stream set to throw reports through
  // its state instead.
  try {
    out->write(text, static_cast<std::streamsize>(n));
  } catch (...) {
    return false;
  }
  return out->good();
}
}  // namespace

void droppable_resource::print_stats(std::ostream& out, bool per_class) const {
  core::write_stats_report(&heap_, per_class ? core::kStatsPerClass : 0, to_stream, &out);
}

void print_stats(std::ostream& out, bool per_class) {
  core::write_stats_report(nullptr, per_class ? core::kStatsPerClass : 0, to_stream, &out);
}

// The fast paths need no stack frame; everything else, including the throw,
// is out of line.
void* droppable_resource::do_allocate(std::size_t bytes, std::size_t alignment) {
  if (void* p = heap_.allocate_cached(bytes, alignment)) return p;
  return allocate_or_throw(bytes, alignment);
}

void* droppable_resource::allocate_or_throw(std::size_t bytes, std::size_t alignment) {
  heap_.make_current();  // then allocate() below starts with the fast path
  core::alloc_error err = core::alloc_error::none;
  void* p = heap_.allocate(bytes, alignment, &err);
  if (p == nullptr) throw allocation_error(bytes, alignment, err);
  return p;
}

void droppable_resource::do_deallocate(void* p, [[maybe_unused]] std::size_t bytes,
                                       [[maybe_unused]] std::size_t alignment) {
  // The size and alignment are not needed: the block's arena knows its class,
  // so a wrong one is harmless here. Checked builds still report it, since it
  // is a caller bug that another memory resource would turn into corruption.
#if defined(DROPALLOC_CHECKED) && DROPALLOC_CHECKED
  if (!heap_.sized_free_matches(p, bytes, alignment)) return;
#endif
  if (heap_.deallocate_cached(p)) return;
  deallocate_slow(p);
}

void droppable_resource::deallocate_slow(void* p) noexcept {
  if (p == nullptr) return;  // as free(NULL): nothing to do, nothing to report
  heap_.make_current();  // then deallocate() starts with the fast path
  heap_.deallocate(p);
}

void droppable_resource::deallocate(const block_ref& b) noexcept {
  if (b.ptr == nullptr) return;
  // The generation is compared under the block's seal lock, so a free and
  // reuse of the address by another thread cannot come between.
  heap_.deallocate_generation(b.ptr, b.generation);
}

block_ref droppable_resource::allocate_block(std::size_t bytes, std::size_t alignment) {
  void* p = allocate(bytes, alignment);
  return block_ref{p, heap_.generation(p)};
}

namespace {

// Sources up to this size are copied into one buffer per thread, kept for the
// thread's next call: no allocation per call (a program writing many values
// would otherwise churn its ordinary heap, and a sanitizer's quarantine would
// hold every copy). Larger ones get a buffer of their own for the call.
constexpr std::size_t kKeptCopyBytes = std::size_t{1} << 20;

struct source_buffer {
  std::unique_ptr<std::byte[]> kept;
  std::size_t kept_size = 0;
};
thread_local source_buffer t_source;

// A private copy of src[0, n) in ordinary memory: in the thread's kept
// buffer, or in *large for a source above kKeptCopyBytes.
const std::byte* source_copy(const void* src, std::size_t n, std::unique_ptr<std::byte[]>* large) {
  if (n == 0) return nullptr;
  std::byte* to;
  if (n > kKeptCopyBytes) {
    *large = std::make_unique_for_overwrite<std::byte[]>(n);
    to = large->get();
  } else {
    source_buffer& b = t_source;
    if (b.kept_size < n) {
      std::size_t size = std::max<std::size_t>(n, std::min(kKeptCopyBytes, b.kept_size * 2));
      b.kept = std::make_unique_for_overwrite<std::byte[]>(size);
      b.kept_size = size;
    }
    to = b.kept.get();
  }
  std::memcpy(to, src, n);
  return to;
}

}  // namespace

namespace {

void require_answers(std::size_t blocks, std::size_t answers) {
  if (answers >= blocks) return;
  char what[160];
  snprintf(what, sizeof what, "dropalloc: seal_many of %zu blocks with room for %zu answers", blocks, answers);
  throw std::invalid_argument(what);
}

}  // namespace

std::size_t droppable_resource::seal_many(std::span<void* const> blocks, std::span<block_state> answers) {
  require_answers(blocks.size(), answers.size());
  return heap_.seal_many(blocks.data(), blocks.size(), answers.data());
}

std::size_t droppable_resource::seal_many(std::span<block_ref> blocks, std::span<block_state> answers) {
  require_answers(blocks.size(), answers.size());
  // In batches on the stack: no allocation, and one barrier per batch.
  constexpr std::size_t kBatch = 128;
  void* ptrs[kBatch];
  std::uint64_t expected[kBatch];
  std::uint64_t sealed[kBatch];
  block_state got[kBatch];
  std::size_t at[kBatch];
  std::size_t intact = 0;
  for (std::size_t from = 0; from < blocks.size(); from += kBatch) {
    const std::size_t to = std::min(blocks.size(), from + kBatch);
    std::size_t k = 0;
    for (std::size_t i = from; i < to; ++i) {
      const block_ref& b = blocks[i];
      if (b.generation == 0) {  // as through_handle: no generation, nothing sealed
        answers[i] = b.ptr == nullptr || !heap_.owns(b.ptr) ? block_state::foreign : block_state::stale;
        continue;
      }
      ptrs[k] = b.ptr;
      expected[k] = b.generation;
      at[k] = i;
      ++k;
    }
    intact += heap_.seal_many(ptrs, k, got, sealed, expected);
    for (std::size_t j = 0; j < k; ++j) {
      answers[at[j]] = got[j];
      if (sealed[j] != 0) blocks[at[j]].generation = sealed[j];
    }
  }
  return intact;
}

block_state droppable_resource::write_and_seal(void* p, const void* src, std::size_t n, std::uint64_t* gen,
                                               std::uint64_t expected_gen) {
  *gen = 0;
  // Validate before writing: a freed or foreign block must not be written to.
  std::size_t usable = heap_.usable_size(p);
  if (usable == 0) return p != nullptr && heap_.owns(p) ? block_state::stale : block_state::foreign;
  if (n > usable) {
    char what[160];
    snprintf(what, sizeof what, "dropalloc: write_and_seal of %zu bytes into a block of %zu usable bytes", n,
             usable);
    throw std::length_error(what);
  }
  // The caller's bytes are copied to private memory first, with no lock
  // held: reading them may wait (a page fault served by another thread, a
  // file on a slow disk), and the core reads its source under the block's
  // seal lock and inside a read section, which would make every free on the
  // same lock stripe, and every unmap in the process, wait too.
  if (n != 0 && src == nullptr) throw std::invalid_argument("dropalloc: write_and_seal from a null source");
  std::unique_ptr<std::byte[]> large;  // freed when the call returns
  const std::byte* from = source_copy(src, n, &large);
  // Writes, zeroes the rest, seals and compares under the block's seal lock
  // (core/seal_check.cc): it is sealed only once it was found to hold
  // exactly those bytes, and a free of it waits until then.
  return heap_.write_and_seal(p, from, n, gen, expected_gen);
}

}  // namespace dropalloc
