// Shared scaffolding for the macro workloads (bench/macro/*.cc).
//
// Each workload is a plain program using malloc/free/new/delete, so that the
// allocator under test is whatever the process's malloc is: glibc, or a library
// put in front of it with LD_PRELOAD (bench/compare.py does that). Every
// workload:
//   - takes --quick (tiny sizes, for CI smoke runs) and --threads=N;
//   - uses fixed seeds, so every contender gets the same sequence of requests;
//   - times only its own work loop (not process start-up, dynamic loading or
//     exit), and prints exactly one line on stdout:
//       RESULT name=<w> seconds=<s> ops=<n> alloc=<a> malloc_from=<lib> mapped=<libs> hwm_kib=<k> check=<x>
//     alloc is which library provides malloc (found with dlsym + dladdr, so an
//     LD_PRELOAD that did not take shows up as glibc), mapped lists the known
//     allocator libraries found in /proc/self/maps, hwm_kib is the peak RSS of
//     this program image (VmHWM), check is a checksum that keeps the work live.
#pragma once

#include <dlfcn.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

namespace bench {

// Makes p escape to the optimiser: a malloc/free pair whose pointer escapes
// here cannot be deleted (GCC and Clang both remove unused malloc/free and
// new/delete pairs otherwise).
inline void escape(void* p) { asm volatile("" : : "g"(p) : "memory"); }

// splitmix64: tiny, fast, identical on every platform (unlike std
// distributions), good enough to pick sizes and slots.
struct rng {
  std::uint64_t s;
  explicit rng(std::uint64_t seed) : s(seed) {}
  std::uint64_t next() {
    std::uint64_t z = (s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }
  // Uniform in [lo, hi].
  std::size_t range(std::size_t lo, std::size_t hi) { return lo + next() % (hi - lo + 1); }
};

struct options {
  bool quick = false;
  int threads = 2;
};

// For programs that hand the rest of their arguments on (Google Benchmark):
// removes every `flag` from argv and says whether there was one.
inline bool take_flag(int* argc, char** argv, const char* flag) {
  bool seen = false;
  int out = 1;
  for (int i = 1; i < *argc; ++i) {
    if (std::strcmp(argv[i], flag) == 0) seen = true;
    else argv[out++] = argv[i];
  }
  *argc = out;
  return seen;
}

inline options parse(int argc, char** argv) {
  options o;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--quick") == 0) {
      o.quick = true;
    } else if (std::strncmp(argv[i], "--threads=", 10) == 0) {
      o.threads = std::atoi(argv[i] + 10);
      if (o.threads < 1) o.threads = 1;
    } else {
      std::fprintf(stderr, "usage: %s [--quick] [--threads=N]\n", argv[0]);
      std::exit(2);
    }
  }
  return o;
}

// The file that defines the malloc this process calls.
inline std::string malloc_provider() {
  void* sym = dlsym(RTLD_DEFAULT, "malloc");
  Dl_info info{};
  if (sym == nullptr || dladdr(sym, &info) == 0 || info.dli_fname == nullptr) return "unknown";
  return info.dli_fname;
}

// Short allocator name from a library path.
inline const char* allocator_name(const std::string& lib) {
  if (lib.find("libdropalloc") != std::string::npos) return "dropalloc";
  if (lib.find("libjemalloc") != std::string::npos) return "jemalloc";
  if (lib.find("libmimalloc") != std::string::npos) return "mimalloc";
  if (lib.find("libtcmalloc") != std::string::npos) return "tcmalloc";
  if (lib.find("libc.so") != std::string::npos) return "glibc";
  return "unknown";
}

// Known allocator libraries mapped into this process, comma-separated ("-": none).
inline std::string mapped_allocators() {
  std::string out;
  FILE* f = std::fopen("/proc/self/maps", "r");
  if (f == nullptr) return "?";
  char line[4096];
  while (std::fgets(line, sizeof line, f) != nullptr) {
    for (const char* lib : {"libdropalloc", "libjemalloc", "libmimalloc", "libtcmalloc"}) {
      if (std::strstr(line, lib) != nullptr && out.find(lib) == std::string::npos) {
        if (!out.empty()) out += ',';
        out += lib;
      }
    }
  }
  std::fclose(f);
  return out.empty() ? "-" : out;
}

// A "<key> <n> kB" line of /proc/self/status, in KiB; -1 if absent.
inline long status_kib(const char* key) {
  FILE* f = std::fopen("/proc/self/status", "r");
  if (f == nullptr) return -1;
  char line[256];
  long kib = -1;
  const std::size_t n = std::strlen(key);
  while (std::fgets(line, sizeof line, f) != nullptr) {
    if (std::strncmp(line, key, n) == 0) kib = std::atol(line + n);
  }
  std::fclose(f);
  return kib;
}

// Peak resident set of this program image in KiB (VmHWM). Unlike the
// rusage of a child, it does not include the spawning process's pages.
inline long peak_rss_kib() { return status_kib("VmHWM:"); }

class timer {
 public:
  timer() : t0_(std::chrono::steady_clock::now()) {}
  double seconds() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
  }

 private:
  std::chrono::steady_clock::time_point t0_;
};

inline void report(const char* name, double seconds, std::uint64_t ops, std::uint64_t check) {
  const std::string lib = malloc_provider();
  std::printf("RESULT name=%s seconds=%.6f ops=%llu alloc=%s malloc_from=%s mapped=%s hwm_kib=%ld check=%llu\n",
              name, seconds, static_cast<unsigned long long>(ops), allocator_name(lib), lib.c_str(),
              mapped_allocators().c_str(), peak_rss_kib(), static_cast<unsigned long long>(check));
  std::fflush(stdout);
}

}  // namespace bench
