// The C malloc family of the LD_PRELOAD shim (libdropalloc.so), its start-up
// (environment, banner) and exit statistics. Semantics are documented in
// allocator/shim/README.md.
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <new>

#include "allocator/core/stats_report.h"
#include "allocator/dropalloc_c.h"
#include "allocator/os/options.h"
#include "allocator/os/os.h"
#include "allocator/shim/c_stats.h"
#include "allocator/shim/shim.h"
#include "allocator/version.h"

namespace dropalloc::shim {

std::atomic<core::heap*> g_general{nullptr};
core::heap* g_droppable = nullptr;
std::size_t g_drop_min = 0;
std::size_t g_drop_max = 0;

namespace {

alignas(core::heap) unsigned char g_general_storage[sizeof(core::heap)];
alignas(core::heap) unsigned char g_droppable_storage[sizeof(core::heap)];
std::atomic<bool> g_init_busy{false};
bool g_verbose = false;
os::stats_level g_stats = os::stats_level::off;

// write(2) only: stdio may allocate, and errno must survive.
void say(const char* msg) noexcept {
  int saved = errno;
  ssize_t ignored = write(STDERR_FILENO, msg, strlen(msg));
  (void)ignored;
  errno = saved;
}

// How long free memory stays before it goes back to the OS, and whether a
// background thread hands it back (README.md, "Options").
void setup_decay() {
  general()->set_decay(os::option_number(os::option::decay_ms), os::option_flag(os::option::decay_thread));
}

// DROPALLOC_DROPPABLE_RANGE=min-max: the experiment switch.
void setup_droppable_range() {
  std::size_t lo = 0, hi = 0;
  if (!os::option_range(&lo, &hi)) return;
  g_drop_min = lo;
  g_drop_max = hi;
  g_droppable = new (g_droppable_storage)
      core::heap(core::heap_options{.purger_starts_on_free = false, .name = "malloc droppable range"});
  char line[256];
  snprintf(line, sizeof line,
           "dropalloc: WARNING: malloc requests of %zu-%zu bytes use droppable memory (%s): "
           "under memory pressure they may read as zeros and this program may crash or corrupt data\n",
           lo, hi, to_string(g_droppable->arena_backing()));
  say(line);
}

void print_all_stats(unsigned flags) {
  core::fd_sink sink{STDERR_FILENO};
  core::write_stats_report(nullptr, flags, core::write_to_fd, &sink);
}

// Runs after libc and libstdc++ are initialised (they are our dependencies),
// so getenv is safe here. Earlier calls used the defaults: verbose off, no
// droppable range.
__attribute__((constructor)) void shim_start() {
  general();
  g_verbose = os::option_flag(os::option::verbose);
  g_stats = os::option_stats();
  setup_decay();
  if (dropalloc_shim_active() == 0) {
    // Loaded with dlopen (for the C API) or after libc: malloc is not ours.
    if (g_verbose) {
      say("dropalloc: libdropalloc.so (dropalloc " DROPALLOC_VERSION_STRING
          ") loaded, but the process's malloc is not this shim\n");
      os::print_options();
    }
    return;
  }
  setup_droppable_range();
  if (g_verbose) {
    say("dropalloc: LD_PRELOAD shim active (dropalloc " DROPALLOC_VERSION_STRING
        "): malloc and operator new served by dropalloc\n");
    os::print_options();
  }
}

// Destructors of preloaded libraries run after the program's exit handlers.
__attribute__((destructor)) void shim_stop() {
  if (g_stats == os::stats_level::off || dropalloc_shim_active() == 0) return;
  print_all_stats(g_stats == os::stats_level::classes ? core::kStatsPerClass : 0);
}

}  // namespace

core::heap* init_general() noexcept {
  // A spin lock, not a mutex: this may run before libpthread is usable and
  // from inside other libraries' initialisation. The heap constructor does not
  // allocate, so the holder never re-enters here.
  while (g_init_busy.exchange(true, std::memory_order_acquire)) sched_yield();
  core::heap* h = g_general.load(std::memory_order_relaxed);
  if (h == nullptr) {
    // Ordinary memory: a general-purpose program cannot survive its heap
    // reading back as zeros, and it needs its heap in a forked child.
    // Its frees may come from inside the C library: see purger_starts_on_free.
    h = new (g_general_storage)
        core::heap(core::heap_options{.os = &os::ordinary_os(), .purger_starts_on_free = false, .name = "malloc"});
    g_general.store(h, std::memory_order_release);
  }
  g_init_busy.store(false, std::memory_order_release);
  return h;
}

void* alloc_slow(std::size_t bytes, std::size_t alignment) noexcept {
  // Then alloc()'s heap starts with the fast path (see heap::make_current).
  if (core::heap* h = g_general.load(std::memory_order_acquire)) h->make_current();
  return alloc(bytes, alignment);
}

void* alloc_droppable(std::size_t bytes, std::size_t alignment) noexcept {
  core::alloc_error err;
  void* p = g_droppable->allocate(bytes, alignment, &err);
  if (p == nullptr) report_alloc_failure(bytes, err);
  return p;
}

void report_alloc_failure(std::size_t bytes, core::alloc_error err) noexcept {
  static std::atomic<bool> reported{false};
  if (g_verbose && err != core::alloc_error::bad_alignment && !reported.exchange(true)) {
    char line[256];
    snprintf(line, sizeof line,
             "dropalloc: an allocation of %zu bytes failed: %s%s (further failures are not reported)\n", bytes,
             to_string(err),
             err == core::alloc_error::out_of_memory ? " (an address-space limit such as ulimit -v, or memory exhausted)"
                                                      : "");
    say(line);
  }
  errno = ENOMEM;
}

// Memory that is in no arena of this process: handed out by the dynamic
// loader's bootstrap allocator, by a library bound to libc's malloc
// (RTLD_DEEPBIND), or a wild pointer. We cannot free it, and guessing its
// extent would be worse than leaking it: ignore it, count it, and say so
// once when verbose.
void release_foreign(void* p) noexcept {
  if (core::g_foreign_frees.fetch_add(1, std::memory_order_relaxed) == 0 && g_verbose) {
    char line[128];
    int saved = errno;
    snprintf(line, sizeof line, "dropalloc: free(%p) ignored: not allocated by dropalloc (reported once)\n", p);
    errno = saved;
    say(line);
  }
}

}  // namespace dropalloc::shim

using dropalloc::shim::alloc;
using dropalloc::shim::malloc_align;
using dropalloc::shim::release;
using dropalloc::shim::usable;

namespace {

inline bool mul_overflows(std::size_t a, std::size_t b, std::size_t* out) {
  return __builtin_mul_overflow(a, b, out);
}

// Alignment at least that of malloc; a power of two (checked by callers).
inline void* alloc_aligned(std::size_t alignment, std::size_t bytes) {
  if (alignment < dropalloc::shim::kMallocAlign) alignment = dropalloc::shim::kMallocAlign;
  return alloc(bytes, alignment);
}

inline bool is_pow2(std::size_t a) { return a != 0 && (a & (a - 1)) == 0; }

// A new block is only worth its copy when the old one would waste more than
// half of itself.
inline bool fits_in_place(std::size_t have, std::size_t want) { return want <= have && want >= have / 2; }

void* realloc_impl(void* p, std::size_t bytes) {
  if (p == nullptr) return alloc(bytes, malloc_align(bytes));
  if (bytes == 0) {
    // glibc's choice, which programs written against it rely on: free, NULL.
    int saved = errno;
    release(p);
    errno = saved;
    return nullptr;
  }
  // One lookup of p's heap serves the size, the growth and the free below
  // (heaps live as long as the process).
  dropalloc::core::heap* h = dropalloc::shim::heap_for(p);
  std::size_t have = h == nullptr ? 0 : h->usable_size(p);
  if (have == 0) {
    // Not a live block of ours: its size is unknown, so it cannot be copied.
    if (h == nullptr) {
      dropalloc::shim::release_foreign(p);
    } else {
      dropalloc::shim::release_to(h, p);  // a freed or interior pointer: the heap refuses and reports it
    }
    errno = ENOMEM;
    return nullptr;
  }
  // A request only a mapping of its own can hold, of a block that has one:
  // grow it where it is first (no copy, no page faults over the old bytes).
  // Before the size rule below, because a large block's usable size is its
  // mapping's, which may be up to four times what it was asked for (a
  // reused mapping): a growth from there looked like a shrink and copied.
  if (bytes > dropalloc::core::kMaxClassSize && have > dropalloc::core::kMaxClassSize &&
      dropalloc::shim::grow_in_place(h, p, bytes)) {
    return p;
  }
  if (fits_in_place(have, bytes) && dropalloc::shim::serves_size(h, bytes)) return p;
  void* q = alloc(bytes, malloc_align(bytes));
  if (q == nullptr) return nullptr;  // the old block stays valid, as C requires
  memcpy(q, p, bytes < have ? bytes : have);
  int saved = errno;
  dropalloc::shim::release_to(h, p);
  errno = saved;
  return q;
}

// The slow paths of malloc and free, out of line: with them inline the fast
// paths saved and restored registers that only the slow paths use.
[[gnu::noinline]] void* malloc_slow(std::size_t bytes) noexcept {
  return dropalloc::shim::alloc_slow(bytes, malloc_align(bytes));
}

[[gnu::noinline]] void free_slow(void* p) noexcept {
  if (p == nullptr) return;
  // A refused free writes a report; free never changes errno.
  int saved = errno;
  release(p);
  errno = saved;
}

}  // namespace

extern "C" {

#define DROPALLOC_EXPORT __attribute__((visibility("default")))

DROPALLOC_EXPORT void* malloc(size_t bytes) {
  if (void* p = dropalloc::shim::try_malloc_cached(bytes)) return p;
  return malloc_slow(bytes);
}

DROPALLOC_EXPORT void free(void* p) {
  if (dropalloc::shim::try_release_cached(p)) return;
  free_slow(p);
}

DROPALLOC_EXPORT void* calloc(size_t n, size_t size) {
  size_t bytes;
  if (mul_overflows(n, size, &bytes)) {
    errno = ENOMEM;
    return nullptr;
  }
  // The heap zeroes what needs it; fresh large mappings are already zero.
  return dropalloc::shim::alloc_zeroed(bytes, malloc_align(bytes));
}

DROPALLOC_EXPORT void* realloc(void* p, size_t bytes) { return realloc_impl(p, bytes); }

DROPALLOC_EXPORT void* reallocarray(void* p, size_t n, size_t size) {
  size_t bytes;
  if (mul_overflows(n, size, &bytes)) {
    errno = ENOMEM;  // what glibc sets; p stays valid
    return nullptr;
  }
  return realloc_impl(p, bytes);
}

DROPALLOC_EXPORT int posix_memalign(void** out, size_t alignment, size_t bytes) {
  if (!is_pow2(alignment) || alignment % sizeof(void*) != 0) return EINVAL;
  int saved = errno;
  void* p = alloc_aligned(alignment, bytes);
  errno = saved;  // posix_memalign reports through its result, not errno
  if (p == nullptr) return ENOMEM;
  *out = p;
  return 0;
}

DROPALLOC_EXPORT void* aligned_alloc(size_t alignment, size_t bytes) {
  // Sizes that are not a multiple of the alignment are accepted: many
  // programs pass them, and glibc accepts them too.
  if (!is_pow2(alignment)) {
    errno = EINVAL;
    return nullptr;
  }
  return alloc_aligned(alignment, bytes);
}

DROPALLOC_EXPORT void* memalign(size_t alignment, size_t bytes) {
  // glibc rounds a non-power-of-two alignment up instead of failing.
  if (alignment > dropalloc::core::kMaxRequest) {
    errno = EINVAL;
    return nullptr;
  }
  if (!is_pow2(alignment)) alignment = alignment == 0 ? 1 : std::size_t{1} << (64 - __builtin_clzll(alignment));
  return alloc_aligned(alignment, bytes);
}

DROPALLOC_EXPORT void* valloc(size_t bytes) { return alloc_aligned(dropalloc::os::kPageSize, bytes); }

DROPALLOC_EXPORT void* pvalloc(size_t bytes) {
  constexpr size_t page = dropalloc::os::kPageSize;
  if (bytes > SIZE_MAX - (page - 1)) {
    errno = ENOMEM;
    return nullptr;
  }
  size_t rounded = (bytes + page - 1) & ~(page - 1);
  return alloc_aligned(page, rounded == 0 ? page : rounded);
}

DROPALLOC_EXPORT size_t malloc_usable_size(void* p) { return p == nullptr ? 0 : usable(p); }

// glibc's contract: 1 if memory was handed back to the OS, else 0. The pad
// (memory to keep at the top of glibc's heap) has no meaning here.
DROPALLOC_EXPORT int malloc_trim(size_t) {
  std::size_t released = dropalloc::shim::general()->trim();
  if (dropalloc::shim::g_droppable != nullptr) released += dropalloc::shim::g_droppable->trim();
  return released != 0 ? 1 : 0;
}

// C23: the size is a hint we do not need (the block knows its size).
DROPALLOC_EXPORT void free_sized(void* p, size_t) { free(p); }
DROPALLOC_EXPORT void free_aligned_sized(void* p, size_t, size_t) { free(p); }

// glibc's internal names: libraries built against glibc internals, and static
// links, call these directly. The aliases are the same functions; glibc's
// declarations of the targets carry attributes (leaf, alloc_size) that do not
// change the code, hence the pragma.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmissing-attributes"
DROPALLOC_EXPORT void* __libc_malloc(size_t) __attribute__((alias("malloc")));
DROPALLOC_EXPORT void __libc_free(void*) __attribute__((alias("free")));
DROPALLOC_EXPORT void* __libc_calloc(size_t, size_t) __attribute__((alias("calloc")));
DROPALLOC_EXPORT void* __libc_realloc(void*, size_t) __attribute__((alias("realloc")));
DROPALLOC_EXPORT void* __libc_memalign(size_t, size_t) __attribute__((alias("memalign")));
DROPALLOC_EXPORT void* __libc_valloc(size_t) __attribute__((alias("valloc")));
DROPALLOC_EXPORT void* __libc_pvalloc(size_t) __attribute__((alias("pvalloc")));
DROPALLOC_EXPORT int __posix_memalign(void**, size_t, size_t) __attribute__((alias("posix_memalign")));

#pragma GCC diagnostic pop

DROPALLOC_EXPORT int dropalloc_shim_active(void) {
  // Comparing function addresses does not work: an executable that takes
  // malloc's address (Python's raw allocator table) makes its own PLT stub the
  // canonical address. Instead allocate through whichever malloc the dynamic
  // linker bound and see whose block comes back.
  static std::atomic<int> answer{-1};
  int a = answer.load(std::memory_order_relaxed);
  if (a < 0) {
    void* (*volatile bound_malloc)(size_t) = &malloc;
    void (*volatile bound_free)(void*) = &free;
    void* p = bound_malloc(16);
    {
      dropalloc::core::read_section reading;
      dropalloc::core::segment* s = dropalloc::core::segment_of(p);
      a = s != nullptr && s->owner == dropalloc::shim::general() ? 1 : 0;
    }
    bound_free(p);
    answer.store(a, std::memory_order_relaxed);
  }
  return a;
}

DROPALLOC_EXPORT int dropalloc_malloc_stats(dropalloc_stats* out) {
  if (out == nullptr) return EINVAL;
  if (dropalloc_shim_active() == 0) return ENOSYS;
  dropalloc::resource_stats st = dropalloc::shim::general()->stats();
  if (dropalloc::shim::g_droppable != nullptr) {
    dropalloc::resource_stats d = dropalloc::shim::g_droppable->stats();
    dropalloc::add_counters(st, d);
    st.droppable = d.droppable;
  }
  dropalloc::shim::to_c_stats(st, dropalloc::core::g_foreign_frees.load(std::memory_order_relaxed), out);
  return 0;
}

}  // extern "C"
