// Counters of the drop-truth test: for each seal path and each moment a block
// is looked at, what check() said and whether the bytes agreed with it.
// Trivially copyable: it crosses a pipe from the child in the cgroup.
#pragma once

#include <cstdint>
#include <cstdio>

namespace dropalloc::truth {

enum seal_path : int { plain_seal, batch_seal_all, write_and_seal, kPaths };

// When a block is looked at.
enum moment : int {
  after_seal,      // right after its first seal since it was written
  after_reseal,    // seal() again on a sealed block nobody wrote since
  after_rewrite,   // written again and resealed after it read dropped
  revisit,         // its owner checks it again later
  after_seal_all,  // an older block of a resource right after seal_all() ran on it
  other_thread,    // checked by a thread other than its owner
  kMoments,
};

enum verdict : int {
  ok,        // check() said intact and the bytes matched the checksum
  wrong,     // check() said intact (after the read) but the bytes differ
  dropped,   // check() said dropped
  unsealed,  // check() said unsealed
  bad,       // stale or foreign for a live handle: must not happen
  kVerdicts,
};

struct tally {
  std::uint64_t n[kPaths][kMoments][kVerdicts] = {};
  std::uint64_t blocks[kPaths] = {};            // fresh blocks written through the path
  std::uint64_t lost_before_seal[kPaths] = {};  // see oracle.h: allowed for seal()/seal_all()
  std::uint64_t bytes = 0;                      // bytes written, rewrites included
  std::uint64_t drops_detected = 0;             // the resources' own counter

  void add(const tally& o) {
    for (int p = 0; p < kPaths; ++p) {
      for (int m = 0; m < kMoments; ++m) {
        for (int v = 0; v < kVerdicts; ++v) n[p][m][v] += o.n[p][m][v];
      }
      blocks[p] += o.blocks[p];
      lost_before_seal[p] += o.lost_before_seal[p];
    }
    bytes += o.bytes;
    drops_detected += o.drops_detected;
  }
  std::uint64_t by_path(int p, int v) const {
    std::uint64_t s = 0;
    for (int m = 0; m < kMoments; ++m) s += n[p][m][v];
    return s;
  }
  std::uint64_t by_moment(int m, int v) const {
    std::uint64_t s = 0;
    for (int p = 0; p < kPaths; ++p) s += n[p][m][v];
    return s;
  }
  std::uint64_t total(int v) const {
    std::uint64_t s = 0;
    for (int p = 0; p < kPaths; ++p) s += by_path(p, v);
    return s;
  }
  std::uint64_t total_blocks() const { return blocks[0] + blocks[1] + blocks[2]; }
  std::uint64_t total_lost_before_seal() const {
    return lost_before_seal[0] + lost_before_seal[1] + lost_before_seal[2];
  }
};

inline const char* path_name(int p) {
  static const char* const names[kPaths] = {"write+seal()", "seal_all() batches", "write_and_seal()"};
  return names[p];
}

inline const char* moment_name(int m) {
  static const char* const names[kMoments] = {"after first seal", "after re-seal",  "after rewrite",
                                              "owner revisit",    "after seal_all", "other thread"};
  return names[m];
}

inline void print(std::FILE* out, const tally& t) {
  std::fprintf(out, "%-20s %9s %10s %9s %9s %7s %5s %12s\n", "seal path", "blocks", "intact", "dropped",
               "unsealed", "wrong", "bad", "lost<seal");
  for (int p = 0; p < kPaths; ++p) {
    std::fprintf(out, "%-20s %9llu %10llu %9llu %9llu %7llu %5llu %12llu\n", path_name(p),
                 static_cast<unsigned long long>(t.blocks[p]), static_cast<unsigned long long>(t.by_path(p, ok)),
                 static_cast<unsigned long long>(t.by_path(p, dropped)),
                 static_cast<unsigned long long>(t.by_path(p, unsealed)),
                 static_cast<unsigned long long>(t.by_path(p, wrong)), static_cast<unsigned long long>(t.by_path(p, bad)),
                 static_cast<unsigned long long>(t.lost_before_seal[p]));
  }
  std::fprintf(out, "%-20s %9s %10s %9s %9s %7s %5s\n", "when looked at", "", "intact", "dropped", "unsealed",
               "wrong", "bad");
  for (int m = 0; m < kMoments; ++m) {
    std::fprintf(out, "%-20s %9s %10llu %9llu %9llu %7llu %5llu\n", moment_name(m), "",
                 static_cast<unsigned long long>(t.by_moment(m, ok)),
                 static_cast<unsigned long long>(t.by_moment(m, dropped)),
                 static_cast<unsigned long long>(t.by_moment(m, unsealed)),
                 static_cast<unsigned long long>(t.by_moment(m, wrong)),
                 static_cast<unsigned long long>(t.by_moment(m, bad)));
  }
  std::fprintf(out, "(intact = check() said intact and the bytes matched; lost<seal = pages zeroed before the\n"
                    " seal, which seal() cannot see and the test caught by reading back; %llu MiB written;\n"
                    " the resources counted %llu drops)\n",
               static_cast<unsigned long long>(t.bytes >> 20), static_cast<unsigned long long>(t.drops_detected));
}

}  // namespace dropalloc::truth
