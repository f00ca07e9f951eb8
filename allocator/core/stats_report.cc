// The statistics report. See stats_report.h. Fixed buffers and snprintf only:
// the malloc shim prints it from inside the process's malloc.
#include "allocator/core/stats_report.h"

#include <errno.h>
#include <sched.h>
#include <unistd.h>

#include <cstdarg>
#include <cstdio>

#include "allocator/core/heap.h"
#include "allocator/core/size_class.h"
#include "allocator/os/os.h"
#include "allocator/version.h"

namespace dropalloc::core {

std::atomic<std::uint64_t> g_foreign_frees{0};

namespace {

// Heaps shown one by one; the rest of a process with more is summed.
constexpr std::size_t kShownHeaps = 16;

struct heap_line {
  const char* name;
  backing kind;
  resource_stats st;
};

struct snapshot {
  heap_line heaps[kShownHeaps];
  std::size_t shown = 0;
  std::size_t others = 0;
  resource_stats others_st;
  std::uint64_t total_live = 0;
  class_usage classes[kNumClasses];
};

void take(snapshot& snap, const heap& h, const resource_stats& st, const class_usage* per_class) {
  if (snap.shown < kShownHeaps) {
    snap.heaps[snap.shown++] = {h.name(), h.arena_backing(), st};
  } else {
    ++snap.others;
    add_counters(snap.others_st, st);
  }
  if (per_class != nullptr) {
    for (std::size_t c = 0; c < kNumClasses; ++c) {
      snap.classes[c].blocks_live += per_class[c].blocks_live;
      snap.classes[c].arenas += per_class[c].arenas;
      snap.classes[c].bytes_mapped += per_class[c].bytes_mapped;
    }
  }
}

void visit(const heap& h, const resource_stats& st, const class_usage* per_class, void* ctx) {
  take(*static_cast<snapshot*>(ctx), h, st, per_class);
}

// "812 B", "156.3 KiB", "12.0 MiB", "1.50 GiB".
const char* human(std::uint64_t bytes, char* buf, std::size_t size) {
  auto b = static_cast<double>(bytes);
  if (bytes < 1024) {
    snprintf(buf, size, "%llu B", static_cast<unsigned long long>(bytes));
  } else if (bytes < (std::uint64_t{1} << 20)) {
    snprintf(buf, size, "%.1f KiB", b / 1024);
  } else if (bytes < (std::uint64_t{1} << 30)) {
    snprintf(buf, size, "%.1f MiB", b / (1024.0 * 1024));
  } else {
    snprintf(buf, size, "%.2f GiB", b / (1024.0 * 1024 * 1024));
  }
  return buf;
}

class printer {
 public:
  printer(stats_sink sink, void* ctx) : sink_(sink), ctx_(ctx) {}

  __attribute__((format(printf, 2, 3))) void line(const char* fmt, ...) {
    if (stopped_) return;
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf - 1, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    std::size_t len = static_cast<std::size_t>(n) < sizeof buf - 1 ? static_cast<std::size_t>(n) : sizeof buf - 2;
    buf[len++] = '\n';
    if (!sink_(ctx_, buf, len)) stopped_ = true;
  }

 private:
  stats_sink sink_;
  void* ctx_;
  bool stopped_ = false;
};

void print_heap(printer& out, const char* name, const char* kind, const resource_stats& st) {
  char a[32], b[32], c[32];
  out.line("heap %s: %s", name, kind);
  out.line("  live           %s in %llu blocks", human(st.bytes_live, a, sizeof a),
           static_cast<unsigned long long>(st.blocks_live));
  out.line("  address space  %s in %llu arenas (peak %s), %s of it resident", human(st.bytes_mapped, a, sizeof a),
           static_cast<unsigned long long>(st.arenas_mapped), human(st.bytes_mapped_peak, b, sizeof b),
           human(st.bytes_resident, c, sizeof c));
  out.line("  metadata       %s (peak %s)", human(st.metadata_bytes, a, sizeof a),
           human(st.metadata_bytes_peak, b, sizeof b));
  out.line("  frees refused  %llu (double, foreign or interior); drops detected %llu",
           static_cast<unsigned long long>(st.misuse_refused), static_cast<unsigned long long>(st.drops_detected));
}

void print_classes(printer& out, const snapshot& snap) {
  out.line("size classes with arenas:");
  out.line("  %9s %12s %11s %7s %14s %5s", "class", "blocks live", "live", "arenas", "address space", "use");
  char a[32], b[32];
  for (std::size_t c = 0; c < kNumClasses; ++c) {
    const class_usage& u = snap.classes[c];
    if (u.arenas == 0) continue;
    std::uint64_t live = u.blocks_live * kSizeClasses[c].size;
    out.line("  %9u %12llu %11s %7llu %14s %4.0f%%", static_cast<unsigned>(kSizeClasses[c].size),
             static_cast<unsigned long long>(u.blocks_live), human(live, a, sizeof a),
             static_cast<unsigned long long>(u.arenas), human(u.bytes_mapped, b, sizeof b),
             u.bytes_mapped != 0 ? 100.0 * static_cast<double>(live) / static_cast<double>(u.bytes_mapped) : 0.0);
  }
  out.line("  (blocks above %u bytes have mappings of their own and are counted per heap only)",
           static_cast<unsigned>(kSizeClasses[kNumClasses - 1].size));
}

// Static, not on the stack: a snapshot of 16 heaps and every class is a few
// KiB, and a report may run on a small thread stack. Guarded by g_snap_busy.
snapshot g_snap;
std::atomic<bool> g_snap_busy{false};

}  // namespace

bool write_to_fd(void* ctx, const char* text, std::size_t n) noexcept {
  auto* s = static_cast<fd_sink*>(ctx);
  int saved = errno;
  while (n > 0) {
    ssize_t w = write(s->fd, text, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      s->error = w < 0 ? errno : EIO;
      errno = saved;
      return false;
    }
    text += w;
    n -= static_cast<std::size_t>(w);
  }
  errno = saved;
  return true;
}


void write_stats_report(const heap* h, unsigned flags, stats_sink sink, void* ctx) noexcept {
  snapshot& snap = g_snap;
  std::atomic<bool>& busy = g_snap_busy;
  while (busy.exchange(true, std::memory_order_acquire)) sched_yield();
  snap = snapshot{};
  bool per_class = (flags & kStatsPerClass) != 0;
  if (h != nullptr) {
    class_usage classes[kNumClasses];
    resource_stats st = h->stats(per_class ? classes : nullptr);
    take(snap, *h, st, per_class ? classes : nullptr);
  } else {
    heap::visit_heaps(visit, &snap, per_class);
  }

  printer out(sink, ctx);
  std::uint64_t age = os::process_age_ms();
  out.line("dropalloc %s statistics: pid %d, %llu.%03llu s after start, %s", DROPALLOC_VERSION_STRING,
           static_cast<int>(getpid()), static_cast<unsigned long long>(age / 1000),
           static_cast<unsigned long long>(age % 1000), h != nullptr ? "one resource" : "every heap of the process");
  for (std::size_t i = 0; i < snap.shown; ++i) {
    print_heap(out, snap.heaps[i].name, to_string(snap.heaps[i].kind), snap.heaps[i].st);
  }
  if (snap.others > 0) {
    char name[48];
    snprintf(name, sizeof name, "(%zu more heaps, summed)", snap.others);
    print_heap(out, name, "various", snap.others_st);
  }
  if (h == nullptr) {
    char a[32], b[32];
    // The kernel updates VmHWM lazily: it may trail VmRSS by a little.
    std::uint64_t now = os::resident_bytes_now(), peak = os::peak_resident_bytes();
    out.line("process: resident %s, peak %s; frees of pointers in no heap ignored: %llu", human(now, a, sizeof a),
             human(peak > now ? peak : now, b, sizeof b),
             static_cast<unsigned long long>(g_foreign_frees.load(std::memory_order_relaxed)));
  }
  if (per_class) print_classes(out, snap);
  // What the figures mean, one line each.
  out.line("live: bytes handed out and not yet freed, each block rounded up to its size class");
  out.line("address space: reserved by arenas; only pages written since count as resident");
  out.line("metadata: block states, generations and drop-check witnesses for every block an arena can hold, "
           "in ordinary memory; reserved with the arena, resident only where touched");
  busy.store(false, std::memory_order_release);
}

// Not taken by the fork handlers instead: a report writes to a sink that
// may block (a pipe nobody drains), and fork() would wait on it.
void stats_report_after_fork() noexcept { g_snap_busy.store(false, std::memory_order_relaxed); }

}  // namespace dropalloc::core
