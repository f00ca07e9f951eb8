// A small service loop over a cache of decompressed blocks in droppable memory.
//
//   bazel run -c opt //examples:cache_service                 # as is
//   bazel run -c opt //examples:cache_service -- --limit-mib=64 --pressure=auto
//
// Requests ask for blocks with a skewed popularity (a fifth of the blocks get
// four fifths of the requests). A miss "decompresses" the block (a few passes
// of a generator over 16-64 KiB). Every second it prints the hit rate and the
// drop statistics. With --limit-mib it runs itself in a child memory cgroup of
// that limit (root, cgroup writable), so that the kernel drops values; with
// --pressure=auto a dropalloc::headroom_keeper also watches the cgroup and
// evicts cold entries before the kernel has to.
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <string_view>

#include "allocator/dropalloc.h"
#include "allocator/os/cgroup.h"

namespace {

struct config {
  std::uint64_t limit_mib = 0;   // 0: run in the current cgroup
  bool auto_pressure = false;
  int seconds = 5;
  std::uint64_t blocks = 0;      // 0: four times the limit's worth (or 4096)
};

std::string decompress(std::uint64_t id) {
  std::uint64_t x = id * 0x9e3779b97f4a7c15ull + 7;
  std::size_t n = 16 * 1024 + x % (48 * 1024);
  std::string out(n, '\0');
  for (int pass = 0; pass < 4; ++pass) {  // stand-in for real decoding work
    for (std::size_t i = 0; i < n; ++i) {
      x ^= x << 13;
      x ^= x >> 7;
      x ^= x << 17;
      out[i] = static_cast<char>(out[i] + static_cast<char>(x));
    }
  }
  return out;
}

std::uint64_t checksum(std::string_view v) {
  std::uint64_t h = 1469598103934665603ull;
  for (std::size_t i = 0; i < v.size(); i += 64) h = (h ^ static_cast<unsigned char>(v[i])) * 1099511628211ull;
  return h ^ v.size();
}

struct summary {
  std::uint64_t requests = 0, hits = 0, builds = 0, drops = 0, evictions = 0, wrong = 0;
  double seconds = 0;
};

summary serve(const config& cfg) {
  std::uint64_t blocks = cfg.blocks != 0 ? cfg.blocks : cfg.limit_mib != 0 ? cfg.limit_mib * 4 * 1024 / 40 : 4096;
  dropalloc::cache<std::uint64_t> cache;
  // --pressure=auto: a headroom keeper sheds the coldest values before the
  // kernel has to, and trims, so the cgroup keeps room for others.
  std::unique_ptr<dropalloc::headroom_keeper> keeper;
  if (cfg.auto_pressure) {
    keeper = std::make_unique<dropalloc::headroom_keeper>(dropalloc::shed_coldest(cache));
    std::printf("pressure source: %s\n", keeper->description().c_str());
  }
  std::mt19937_64 rng(1);
  std::uint64_t hot = blocks / 5 == 0 ? 1 : blocks / 5;
  summary s;
  auto start = std::chrono::steady_clock::now();
  auto next_report = start + std::chrono::seconds(1);
  auto last = cache.stats();
  for (;;) {
    std::uint64_t id = rng() % 5 != 0 ? rng() % hot : rng() % blocks;
    std::uint64_t sum = cache.get_or_build(id, [id] { return decompress(id); }, [](std::string_view v) { return checksum(v); });
    ++s.requests;
    if ((s.requests & 63) == 0 && sum != checksum(decompress(id))) ++s.wrong;  // spot check
    if ((s.requests & 255) != 0) continue;
    auto now = std::chrono::steady_clock::now();
    if (now < next_report) continue;
    auto st = cache.stats();
    double window_hits = static_cast<double>(st.hits - last.hits);
    double window_all = window_hits + static_cast<double>(st.misses - last.misses);
    std::printf("t=%3llds  requests %8llu  hit rate %5.1f%%  drops detected %7llu  rebuilds %7llu  evicted %7llu  "
                "live %5llu MiB  resident %5llu MiB\n",
                static_cast<long long>(std::chrono::duration_cast<std::chrono::seconds>(now - start).count()),
                static_cast<unsigned long long>(s.requests), window_all > 0 ? 100.0 * window_hits / window_all : 0.0,
                static_cast<unsigned long long>(st.drops_detected), static_cast<unsigned long long>(st.rebuilds),
                static_cast<unsigned long long>(st.evictions), static_cast<unsigned long long>(st.bytes_live >> 20),
                static_cast<unsigned long long>(st.bytes_resident >> 20));
    std::fflush(stdout);
    last = st;
    next_report += std::chrono::seconds(1);
    if (now - start >= std::chrono::seconds(cfg.seconds)) break;
  }
  s.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  keeper.reset();
  auto st = cache.stats();
  s.hits = st.hits;
  s.builds = st.builds;
  s.drops = st.drops_detected;
  s.evictions = st.evictions;
  return s;
}

void print_summary(const config& cfg, const summary& s, std::uint64_t oom_kills) {
  std::printf("summary: pressure=%s limit=%llu MiB  %.0f requests/s  hit rate %.1f%%  builds %llu  drops detected %llu  "
              "evicted %llu  wrong %llu  OOM kills %llu\n",
              cfg.auto_pressure ? "auto" : "kernel", static_cast<unsigned long long>(cfg.limit_mib),
              static_cast<double>(s.requests) / s.seconds,
              s.requests ? 100.0 * static_cast<double>(s.hits) / static_cast<double>(s.requests) : 0.0,
              static_cast<unsigned long long>(s.builds), static_cast<unsigned long long>(s.drops),
              static_cast<unsigned long long>(s.evictions), static_cast<unsigned long long>(s.wrong),
              static_cast<unsigned long long>(oom_kills));
}

}  // namespace

int main(int argc, char** argv) {
  config cfg;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a.rfind("--limit-mib=", 0) == 0) cfg.limit_mib = std::strtoull(a.c_str() + 12, nullptr, 10);
    else if (a == "--pressure=auto") cfg.auto_pressure = true;
    else if (a == "--pressure=kernel") cfg.auto_pressure = false;
    else if (a.rfind("--seconds=", 0) == 0) cfg.seconds = std::atoi(a.c_str() + 10);
    else if (a.rfind("--blocks=", 0) == 0) cfg.blocks = std::strtoull(a.c_str() + 9, nullptr, 10);
    else {
      std::fprintf(stderr, "usage: %s [--limit-mib=N] [--pressure=kernel|auto] [--seconds=N] [--blocks=N]\n", argv[0]);
      return 2;
    }
  }
  if (cfg.limit_mib == 0) {
    print_summary(cfg, serve(cfg), 0);
    return 0;
  }
  std::string why;
  auto cg = dropalloc::os::child_cgroup::create("dropalloc-cache-service-" + std::to_string(getpid()),
                                                cfg.limit_mib << 20, &why);
  if (!cg) {
    std::fprintf(stderr, "cannot make a %llu MiB cgroup (%s); running unlimited\n",
                 static_cast<unsigned long long>(cfg.limit_mib), why.c_str());
    cfg.limit_mib = 0;
    print_summary(cfg, serve(cfg), 0);
    return 0;
  }
  int go[2];
  if (pipe(go) != 0) return 1;
  std::fflush(nullptr);
  pid_t pid = fork();
  if (pid == 0) {
    char c;
    if (read(go[0], &c, 1) != 1) _exit(3);
    print_summary(cfg, serve(cfg), 0);
    std::fflush(nullptr);
    _exit(0);
  }
  bool joined = cg->add_process(pid, &why);
  char c = 1;
  if (write(go[1], &c, 1) != 1) return 1;
  int status = 0;
  waitpid(pid, &status, 0);
  close(go[0]);
  close(go[1]);
  if (!joined) std::fprintf(stderr, "could not join the cgroup: %s\n", why.c_str());
  std::printf("cgroup: limit %llu MiB, OOM kills %llu, child %s\n", static_cast<unsigned long long>(cfg.limit_mib),
              static_cast<unsigned long long>(cg->state().oom_kills),
              WIFEXITED(status) ? "exited normally" : "was killed");
  return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}
