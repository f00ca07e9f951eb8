// Linux implementation of the OS layer. See os.h for the contract.
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <new>

#include "allocator/os/os.h"
#include "allocator/os/options.h"

#ifndef MAP_DROPPABLE
#define MAP_DROPPABLE 0x08  // Linux 6.11+, a mapping type (not OR-able with MAP_PRIVATE)
#endif
#ifndef MADV_FREE
#define MADV_FREE 8
#endif
#ifndef MADV_WIPEONFORK
#define MADV_WIPEONFORK 18
#endif
#ifndef MADV_PAGEOUT
#define MADV_PAGEOUT 21
#endif

namespace dropalloc {

const char* to_string(backing b) noexcept {
  switch (b) {
    case backing::droppable: return "droppable (MAP_DROPPABLE)";
    case backing::private_fallback: return "private fallback (MAP_PRIVATE, no MAP_DROPPABLE)";
    case backing::ordinary: return "ordinary (MAP_PRIVATE, never dropped)";
  }
  return "?";
}

namespace os {
namespace {

constexpr int kENOTSUPP = 524;  // kernel-internal errno some 32-bit kernels leak

// Errors that mean "this kernel or sandbox will not give us droppable memory";
// anything else (ENOMEM) is an ordinary allocation failure.
bool means_unsupported(int err) {
  return err == EINVAL || err == EOPNOTSUPP || err == kENOTSUPP || err == EPERM ||
         err == EAGAIN || err == ENOSYS;
}

const char* errno_name(int err) {
  if (err == kENOTSUPP) return "ENOTSUPP";
  const char* name = strerrorname_np(err);
  return name != nullptr ? name : "unknown";
}

void say(const char* msg) {
  // write(2) rather than stdio: no allocation, safe inside a malloc shim.
  ssize_t ignored = write(STDERR_FILENO, msg, strlen(msg));
  (void)ignored;
}

// Arenas are tried first in a window of the address space of their own,
// which they fill upwards one after another: a spot taken whole there is
// already aligned, one mmap instead of an over-map and two trims (three
// system calls, each taking the process's mmap lock; a program that churns
// large blocks makes thousands). The window is 64 GiB at a random 64 GiB
// step of [2 TiB, 18 TiB), far from where the kernel places mappings
// (top-down from below the stack, near 128 TiB; the program and its brk heap
// near 85 TiB); the cursor starts at a random 4 MiB step of it (22 bits of
// randomisation in all, where the kernel's own placement has 28) and wraps
// to the window's start at its end, by then mostly free again.
//
// The spot is passed as a hint, not with MAP_FIXED_NOREPLACE: the kernel
// takes a hint whose range is free, and a sandbox's allow-list of mmap flags
// or an interposer that drops the address (ThreadSanitizer does, and with
// the fixed flag root then got page 0) sees an ordinary call. Each mapping
// leaves free at least a quarter of its size after it (realloc grows a large
// block in place into that), as the trimmed over-map used to, by chance.
//
// The window is small because the core's address map (core/segment.h) gives
// every 2 GiB that arenas pass through a page of metadata for good: 32 pages
// a window. Its size is also that of the map's fold, which gives each arena
// of one window an entry of its own. Spots found taken in a row
// (kMissesInARow) move the window elsewhere, at most kWindowMoves times;
// before any spot has worked they turn it off (a sanitizer's shadow memory
// lives there). A failed mmap (ENOMEM, EAGAIN) is no miss: it is not about
// the spot.
//
// Under a sanitizer that keeps shadow memory the window is off. Such shadow
// is never given back when a mapping goes, and the window hands every
// mapping a fresh range until it wraps (the kernel's own placement reuses
// the range just freed), so each arena mapped after another was unmapped
// would leave its shadow behind: under AddressSanitizer, an eighth of every
// range ever touched, up to 8 GiB for one pass of the window (a test in a
// 64 MiB cgroup that maps 256 MiB twice was killed by it 1 run in 8).
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__) || defined(__SANITIZE_HWADDRESS__)
constexpr bool kWindowUsable = false;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) || __has_feature(memory_sanitizer) || \
    __has_feature(hwaddress_sanitizer)
constexpr bool kWindowUsable = false;
#else
constexpr bool kWindowUsable = true;
#endif
#else
constexpr bool kWindowUsable = true;
#endif
static_assert(sizeof(std::uintptr_t) == 8, "the arena window needs a 64-bit address space");
constexpr std::uintptr_t kWindowBytes = std::uintptr_t{64} << 30;
constexpr std::uintptr_t kWindowsFrom = std::uintptr_t{2} << 40;
constexpr std::uintptr_t kWindows = (std::uintptr_t{16} << 40) / kWindowBytes;
constexpr std::size_t kWindowStep = std::size_t{4} << 20;  // every arena's alignment at least
constexpr std::uint32_t kMissesInARow = 16;
constexpr std::uint32_t kWindowMoves = 4;

// The next spot; its window is the kWindowBytes-aligned range holding it
// (invariant: never that range's end). 0: no window chosen yet.
std::atomic<std::uintptr_t> g_window_cursor{0};
// Spots found taken in a row, and the window they were in: that window's
// start (kWindowBytes-aligned) plus the count in the bits below it. Tagged
// with the window so that a thread whose spot was claimed before a move,
// and is found taken after it, is not counted against the new window.
std::atomic<std::uintptr_t> g_window_misses{0};
std::atomic<std::uint32_t> g_window_moves{0};
// The windows found full, one per move: a move never goes back to one.
std::atomic<std::uintptr_t> g_windows_full[kWindowMoves] = {};
std::atomic<bool> g_window_worked{false};
std::atomic<bool> g_window_off{false};

constexpr std::uintptr_t window_of(std::uintptr_t spot) { return spot & ~(kWindowBytes - 1); }

// A random spot in a random window.
std::uintptr_t random_spot() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  std::uint64_t r = static_cast<std::uint64_t>(ts.tv_nsec) ^ (static_cast<std::uint64_t>(getpid()) << 32) ^
                    reinterpret_cast<std::uintptr_t>(&ts);  // the stack's address is randomised too
  r *= 0x9e3779b97f4a7c15ull;
  r ^= r >> 29;
  const std::uintptr_t window = kWindowsFrom + (r >> 40) % kWindows * kWindowBytes;
  return window + (r & 0xffffffffu) % (kWindowBytes / kWindowStep) * kWindowStep;
}

// Claims the next spot for a mapping of `step` bytes (at most an eighth of
// the window) and moves the cursor past it.
std::uintptr_t claim_spot(std::size_t step) {
  std::uintptr_t cur = g_window_cursor.load(std::memory_order_relaxed);
  std::uintptr_t want;
  do {
    want = cur != 0 ? cur : random_spot();
    if (want + step >= window_of(want) + kWindowBytes) want = window_of(want);  // wrap
  } while (!g_window_cursor.compare_exchange_weak(cur, want + step, std::memory_order_relaxed));
  return want;
}

// The spot claimed for a mapping was taken. Counts against its window only
// while the cursor is still there; the one miss that makes the count
// kMissesInARow moves the cursor (so one full window costs one move however
// many threads find it full at once), to a window not found full before.
void note_spot_taken(std::uintptr_t spot) {
  const std::uintptr_t window = window_of(spot);
  if (window_of(g_window_cursor.load(std::memory_order_relaxed)) != window) return;  // moved already
  std::uintptr_t seen = g_window_misses.load(std::memory_order_relaxed);
  std::uintptr_t next;
  do {
    next = window_of(seen) == window ? seen + 1 : window + 1;
  } while (!g_window_misses.compare_exchange_weak(seen, next, std::memory_order_relaxed));
  if (next - window != kMissesInARow) return;
  const std::uint32_t moves =
      g_window_worked.load(std::memory_order_relaxed) ? g_window_moves.fetch_add(1, std::memory_order_relaxed)
                                                       : kWindowMoves;
  if (moves >= kWindowMoves) {
    g_window_off.store(true, std::memory_order_relaxed);
    return;
  }
  g_windows_full[moves].store(window, std::memory_order_relaxed);
  std::uintptr_t elsewhere;
  bool full;
  do {  // each draw reads the clock afresh
    elsewhere = random_spot();
    full = false;
    for (const auto& w : g_windows_full) full |= w.load(std::memory_order_relaxed) == window_of(elsewhere);
  } while (full);
  std::uintptr_t cur = g_window_cursor.load(std::memory_order_relaxed);
  while (window_of(cur) == window &&
         !g_window_cursor.compare_exchange_weak(cur, elsewhere, std::memory_order_relaxed)) {
  }
}

// A spot of this window worked: the misses before it were not in a row.
void note_spot_worked(std::uintptr_t spot) {
  if (!g_window_worked.load(std::memory_order_relaxed)) g_window_worked.store(true, std::memory_order_relaxed);
  std::uintptr_t seen = g_window_misses.load(std::memory_order_relaxed);
  if (seen != window_of(spot) && window_of(seen) == window_of(spot)) {
    g_window_misses.compare_exchange_strong(seen, window_of(spot), std::memory_order_relaxed);
  }
}

// The window's next spot, [want, want + bytes), if it was free and is now
// mapped; nullptr otherwise, with nothing mapped.
void* map_in_window(std::size_t bytes, std::size_t alignment, int flags) {
  if (!kWindowUsable || alignment > kWindowStep || bytes > kWindowBytes / 16) return nullptr;
  if (g_window_off.load(std::memory_order_relaxed)) return nullptr;
  const std::size_t step = (bytes + bytes / 4 + kWindowStep - 1) / kWindowStep * kWindowStep;
  const std::uintptr_t want = claim_spot(step);
  void* p = mmap(reinterpret_cast<void*>(want), bytes, PROT_READ | PROT_WRITE, flags, -1, 0);
  if (p == MAP_FAILED) return nullptr;  // the over-map reports the error, if it fails too
  if (reinterpret_cast<std::uintptr_t>(p) == want) {
    note_spot_worked(want);
    return p;
  }
  munmap(p, bytes);  // the spot was taken: the kernel put it elsewhere
  note_spot_taken(want);
  return nullptr;
}

// An aligned mapping: the window's next spot if it is free, else an
// over-map by `alignment` with both ends trimmed. Only the over-map's errors
// are reported (*err): the first try may fail for reasons of its own.
void* map_aligned(std::size_t bytes, std::size_t alignment, int flags, int* err) {
  if (void* at = map_in_window(bytes, alignment, flags)) return at;
  std::size_t span = bytes + alignment;
  void* raw = mmap(nullptr, span, PROT_READ | PROT_WRITE, flags, -1, 0);
  if (raw == MAP_FAILED) {
    *err = errno;
    return nullptr;
  }
  auto start = reinterpret_cast<std::uintptr_t>(raw);
  std::uintptr_t aligned = (start + alignment - 1) & ~(std::uintptr_t{alignment} - 1);
  if (aligned > start) munmap(raw, aligned - start);
  std::uintptr_t end = start + span;
  if (end > aligned + bytes) munmap(reinterpret_cast<void*>(aligned + bytes), end - (aligned + bytes));
  return reinterpret_cast<void*>(aligned);
}

class linux_os final : public os_interface {
 public:
  enum class mode { automatic, fallback, ordinary };
  explicit linux_os(mode m) : mode_(m) {}

  void* map_arena(std::size_t bytes, std::size_t alignment, int* err) noexcept override {
    int saved = errno;
    void* p = nullptr;
    if (arena_backing() == backing::droppable) {
      p = map_aligned(bytes, alignment, MAP_DROPPABLE | MAP_ANONYMOUS, err);
      if (p == nullptr && means_unsupported(*err) && settle_fallback(*err)) {
        p = nullptr;  // fall through to the private mapping below
      } else {
        if (p != nullptr) after_map(p, bytes);
        errno = saved;
        return p;
      }
    }
    p = map_aligned(bytes, alignment, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, err);
    if (p != nullptr && mode_ == mode::ordinary) {
      errno = saved;
      return p;
    }
    if (p != nullptr) {
      // Match droppable semantics where we can: a forked child sees zeros and
      // core dumps leave the data out.
      madvise(p, bytes, MADV_WIPEONFORK);
      madvise(p, bytes, MADV_DONTDUMP);
      after_map(p, bytes);
    }
    errno = saved;
    return p;
  }

  void unmap_arena(void* p, std::size_t bytes) noexcept override {
    int saved = errno;
    munmap(p, bytes);
    errno = saved;
  }

  int extend_arena(void* p, std::size_t old_bytes, std::size_t new_bytes) noexcept override {
    int saved = errno;
    // No MREMAP_MAYMOVE: the kernel grows the mapping where it is or fails
    // and leaves it alone. The new pages inherit the mapping's kind
    // (droppable or private) and its advice (wipe-on-fork, no dump).
    void* q = mremap(p, old_bytes, new_bytes, 0);
    int result = q == MAP_FAILED ? errno : 0;
    errno = saved;
    return result;
  }

  void* map_metadata(std::size_t bytes, int* err) noexcept override {
    int saved = errno;
    void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) {
      *err = errno;
      p = nullptr;
    }
    errno = saved;
    return p;
  }

  void unmap_metadata(void* p, std::size_t bytes) noexcept override {
    int saved = errno;
    munmap(p, bytes);
    errno = saved;
  }

  int seal_pages(void* p, std::size_t bytes) noexcept override {
    if (mode_ == mode::ordinary) return 0;
    return advise_inner_pages(p, bytes, MADV_FREE);
  }

  int release_pages(void* p, std::size_t bytes) noexcept override {
    int saved = errno;
    int rc = madvise(p, bytes, MADV_DONTNEED);
    int result = rc == 0 ? 0 : errno;
    errno = saved;
    return result;
  }

  int drop_pages(void* p, std::size_t bytes) noexcept override {
    // MADV_PAGEOUT zeroes droppable pages at once; MADV_DONTNEED does for any
    // private anonymous page, so it also simulates drops on the fallback.
    auto start = reinterpret_cast<std::uintptr_t>(p) & ~(std::uintptr_t{kPageSize} - 1);
    auto end = (reinterpret_cast<std::uintptr_t>(p) + bytes + kPageSize - 1) &
               ~(std::uintptr_t{kPageSize} - 1);
    int saved = errno;
    int rc = madvise(reinterpret_cast<void*>(start), end - start, MADV_DONTNEED);
    int result = rc == 0 ? 0 : errno;
    errno = saved;
    return result;
  }

  std::size_t resident_bytes(const void* p, std::size_t bytes) noexcept override {
    int saved = errno;
    constexpr std::size_t kChunkPages = 1024;
    unsigned char vec[kChunkPages];
    std::size_t resident = 0;
    auto* cur = static_cast<const unsigned char*>(p);
    std::size_t pages = (bytes + kPageSize - 1) / kPageSize;
    while (pages > 0) {
      std::size_t n = pages < kChunkPages ? pages : kChunkPages;
      if (mincore(const_cast<unsigned char*>(cur), n * kPageSize, vec) != 0) break;
      for (std::size_t i = 0; i < n; ++i) resident += (vec[i] & 1u) ? kPageSize : 0;
      cur += n * kPageSize;
      pages -= n;
    }
    errno = saved;
    return resident;
  }

  backing arena_backing() noexcept override {
    if (mode_ == mode::ordinary) return backing::ordinary;
    int s = state_.load(std::memory_order_acquire);
    if (s == kUnknown) s = probe();
    return s == kDroppable ? backing::droppable : backing::private_fallback;
  }

  int fallback_reason() noexcept override {
    arena_backing();
    return reason_.load(std::memory_order_relaxed);
  }

 private:
  enum : int { kUnknown = 0, kDroppable = 1, kFallback = 2 };

  static int advise_inner_pages(void* p, std::size_t bytes, int advice) {
    auto start = (reinterpret_cast<std::uintptr_t>(p) + kPageSize - 1) & ~(std::uintptr_t{kPageSize} - 1);
    auto end = (reinterpret_cast<std::uintptr_t>(p) + bytes) & ~(std::uintptr_t{kPageSize} - 1);
    if (end <= start) return 0;
    int saved = errno;
    int rc = madvise(reinterpret_cast<void*>(start), end - start, advice);
    int result = rc == 0 ? 0 : errno;
    errno = saved;
    return result;
  }

  static void after_map(void* p, std::size_t bytes) {
    // THP would make a drop take 2 MiB at once and made first touch slower on
    // droppable ranges in our measurements; keep arenas on 4 KiB pages.
    madvise(p, bytes, MADV_NOHUGEPAGE);
  }

  // Decides the backing once. One probe mapping, then unmapped.
  int probe() {
    int expected = kUnknown;
    if (mode_ == mode::fallback || option_flag(option::force_fallback)) {
      reason_.store(-1, std::memory_order_relaxed);
      if (state_.compare_exchange_strong(expected, kFallback)) report();
      return state_.load(std::memory_order_acquire);
    }
    void* p = mmap(nullptr, kPageSize, PROT_READ | PROT_WRITE, MAP_DROPPABLE | MAP_ANONYMOUS, -1, 0);
    if (int injected = test_droppable_errno(); injected != 0 && p != MAP_FAILED) {
      munmap(p, kPageSize);
      p = MAP_FAILED;
      errno = injected;
    }
    if (p != MAP_FAILED) {
      munmap(p, kPageSize);
      if (state_.compare_exchange_strong(expected, kDroppable)) report();
      return state_.load(std::memory_order_acquire);
    }
    if (!means_unsupported(errno)) {
      // A passing failure (ENOMEM) says nothing about support: decide later.
      // Meanwhile try droppable; map_arena reports the real error if any.
      return kDroppable;
    }
    settle_fallback(errno);
    return state_.load(std::memory_order_acquire);
  }

  // Test hook: DROPALLOC_TEST_DROPPABLE_ERRNO=<n> makes the probe behave as if
  // the kernel refused MAP_DROPPABLE with errno n, so the fallback for every
  // errno another kernel may return can be tested on a kernel that has it.
  static int test_droppable_errno() {
    return static_cast<int>(option_number(option::test_droppable_errno));
  }

  bool settle_fallback(int err) {
    int expected = kUnknown;
    int cur = state_.load(std::memory_order_acquire);
    if (cur == kFallback) return true;
    reason_.store(err, std::memory_order_relaxed);
    if (cur == kUnknown) {
      if (state_.compare_exchange_strong(expected, kFallback)) report();
    } else {
      // Droppable worked once, then a map failed as "unsupported" (EAGAIN under
      // mlockall with a small RLIMIT_MEMLOCK, a seccomp change): fall back for good.
      state_.store(kFallback, std::memory_order_release);
      report();
    }
    return true;
  }

  void report() {
    if (!option_flag(option::verbose)) return;
    char line[160];
    int reason = reason_.load(std::memory_order_relaxed);
    if (state_.load(std::memory_order_relaxed) == kDroppable) {
      snprintf(line, sizeof line, "dropalloc: arenas use MAP_DROPPABLE memory\n");
    } else if (reason == -1) {
      snprintf(line, sizeof line, "dropalloc: arenas use private memory (fallback forced)\n");
    } else {
      snprintf(line, sizeof line,
               "dropalloc: MAP_DROPPABLE refused (errno %d: %s); arenas use private memory\n",
               reason, errno_name(reason));
    }
    say(line);
    print_options();
  }

  const mode mode_;
  std::atomic<int> state_{kUnknown};
  std::atomic<int> reason_{0};
};

// Built on first use in static storage and never destroyed: usable before
// main, by the malloc shim (no allocation) and by threads still freeing
// memory while the process runs its exit handlers.
// (A once-flag of its own, not a guarded local static: the guard is the C++
// runtime library's, which libdropalloc.so does not load.)
template <linux_os::mode M>
os_interface& instance() noexcept {
  enum : int { kNone, kBuilding, kBuilt };
  alignas(linux_os) static unsigned char storage[sizeof(linux_os)];
  static std::atomic<int> built{kNone};
  int expected = kNone;
  if (built.load(std::memory_order_acquire) != kBuilt) {
    if (built.compare_exchange_strong(expected, kBuilding, std::memory_order_acquire)) {
      new (storage) linux_os(M);
      built.store(kBuilt, std::memory_order_release);
    } else {
      while (built.load(std::memory_order_acquire) != kBuilt) sched_yield();
    }
  }
  return *std::launder(reinterpret_cast<linux_os*>(storage));
}

}  // namespace

os_interface& system_os() noexcept { return instance<linux_os::mode::automatic>(); }
os_interface& fallback_os() noexcept { return instance<linux_os::mode::fallback>(); }
os_interface& ordinary_os() noexcept { return instance<linux_os::mode::ordinary>(); }

namespace {
// Constants of <linux/membarrier.h>, spelled out: the header is not needed for
// two numbers, and older headers lack the expedited commands.
constexpr int kMembarrierQuery = 0;
constexpr int kMembarrierPrivateExpedited = 1 << 3;
constexpr int kMembarrierRegisterPrivateExpedited = 1 << 4;

long membarrier(int cmd) { return syscall(SYS_membarrier, cmd, 0u, 0); }
}  // namespace

bool register_process_barrier() noexcept {
  long supported = membarrier(kMembarrierQuery);
  if (supported < 0 || (supported & kMembarrierPrivateExpedited) == 0) return false;
  return membarrier(kMembarrierRegisterPrivateExpedited) == 0;
}

int process_barrier() noexcept { return membarrier(kMembarrierPrivateExpedited) == 0 ? 0 : errno; }

namespace {
// The page translation_barrier() advises: read-only private memory, read
// once so that its page table exists (the kernel's walk of it is what looks
// for a pending reclaim flush) and maps the shared zero page, which MADV_FREE
// passes over. Never written, so never dirty: advising it flushes nothing.
std::atomic<void*> g_barrier_page{nullptr};

void* barrier_page() noexcept {
  void* p = g_barrier_page.load(std::memory_order_acquire);
  if (p != nullptr) return p;
  int saved = errno;
  void* fresh = mmap(nullptr, kPageSize, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (fresh == MAP_FAILED) {
    errno = saved;
    return nullptr;
  }
  madvise(fresh, kPageSize, MADV_NOHUGEPAGE);  // a huge zero page has no page table below it
  (void)*static_cast<volatile const unsigned char*>(fresh);
  if (!g_barrier_page.compare_exchange_strong(p, fresh, std::memory_order_acq_rel)) {
    munmap(fresh, kPageSize);  // another thread mapped one first: p is it
  } else {
    p = fresh;
  }
  errno = saved;
  return p;
}
}  // namespace

// Kernels before 4.5 have no MADV_FREE: there MADV_DONTNEED of the same page
// does the same (it zaps the zero-page entry, flushes, and ends with the same
// check for a nested flush). Decided once, at the first EINVAL.
std::atomic<int> g_barrier_advice{MADV_FREE};

int translation_barrier() noexcept {
  void* page = barrier_page();
  if (page == nullptr) return ENOMEM;
  int saved = errno;
  int advice = g_barrier_advice.load(std::memory_order_relaxed);
  int rc = madvise(page, kPageSize, advice);
  if (rc != 0 && errno == EINVAL && advice == MADV_FREE) {
    g_barrier_advice.store(MADV_DONTNEED, std::memory_order_relaxed);
    rc = madvise(page, kPageSize, MADV_DONTNEED);
  }
  int result = rc == 0 ? 0 : errno;
  errno = saved;
  return result;
}

int prepare_translation_barrier() noexcept { return barrier_page() != nullptr ? 0 : ENOMEM; }

namespace {
// Reads a small /proc file into buf with read(2), not stdio: callers may be
// inside malloc. Returns the length, 0 on failure.
std::size_t read_proc(const char* path, char* buf, std::size_t size) {
  int saved = errno;
  std::size_t len = 0;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    ssize_t n = read(fd, buf, size - 1);
    close(fd);
    if (n > 0) len = static_cast<std::size_t>(n);
  }
  buf[len] = '\0';
  errno = saved;
  return len;
}

std::uint64_t status_kib(const char* field) {
  char buf[4096];
  if (read_proc("/proc/self/status", buf, sizeof buf) == 0) return 0;
  const char* line = strstr(buf, field);
  return line != nullptr ? strtoull(line + strlen(field), nullptr, 10) : 0;
}
}  // namespace

std::uint64_t peak_resident_bytes() noexcept { return status_kib("VmHWM:") * 1024; }
std::uint64_t resident_bytes_now() noexcept { return status_kib("VmRSS:") * 1024; }

std::uint64_t process_age_ms() noexcept {
  // Field 22 (starttime, clock ticks after boot); the command name (field 2)
  // may hold spaces and parentheses, so count from its closing one.
  char buf[1024];
  if (read_proc("/proc/self/stat", buf, sizeof buf) == 0) return 0;
  const char* p = strrchr(buf, ')');
  if (p == nullptr) return 0;
  for (int field = 2; field < 22 && p != nullptr; ++field) p = strchr(p + 1, ' ');
  if (p == nullptr) return 0;
  std::uint64_t ticks = strtoull(p + 1, nullptr, 10);
  long hz = sysconf(_SC_CLK_TCK);
  timespec now{};
  if (hz <= 0 || clock_gettime(CLOCK_BOOTTIME, &now) != 0) return 0;
  std::uint64_t now_ms = static_cast<std::uint64_t>(now.tv_sec) * 1000 + static_cast<std::uint64_t>(now.tv_nsec) / 1000000;
  std::uint64_t start_ms = ticks * 1000 / static_cast<std::uint64_t>(hz);
  return now_ms > start_ms ? now_ms - start_ms : 0;
}

}  // namespace os
}  // namespace dropalloc
