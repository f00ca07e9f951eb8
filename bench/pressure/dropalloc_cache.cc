// dropalloc contenders of the cgroup pressure benchmark (bench/pressure.py):
//
//   --kind=sealed    dropalloc::cache<uint32_t> (byte values, sealed,
//                    verified after writing), no budget: the kernel's LRU
//                    dropping of sealed pages decides what stays.
//   --kind=neighbour-uncapped  the sealed cache with a headroom_keeper
//                    (its defaults): it sheds its coldest values above 95%
//                    of the cgroup limit, down to 90%, so a co-tenant's
//                    pages need no reclaim first.
//   --kind=neighbour the same, and the keeper caps the cache at what it kept
//                    until there is room again (headroom_options::cap).
//   --kind=budget    the same with byte_budget set from the cgroup limit at
//                    start: limit minus this process's resident set and a
//                    margin for the index and the builder's staging copies.
//   --kind=adaptive  the sealed cache under the baselines' adaptive budget
//                    (adaptive.h, --adapt-ms): shed on the serving thread
//                    after a build, trim() after a shrink. Same policy as
//                    the LRU baselines, dropalloc's values.
//   --kind=unsealed  values copied into droppable_resource blocks and never
//                    sealed: under a cgroup limit the kernel drops dirty
//                    droppable pages nearly all at once, sealed ones
//                    gradually, least recently used first. An unsealed block is never vouched
//                    for by check(), so a hit is verified with the checksum
//                    alone: a mismatch is a detected drop (miss + rebuild),
//                    never served, and so can never count as wrong data.
#include <cstdio>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "allocator/dropalloc.h"
#include "bench/pressure/adaptive.h"
#include "bench/pressure/workload.h"

namespace {

// Resident bytes of this process's droppable mappings ("dp" in VmFlags), from
// /proc/self/smaps. Not the resource's mincore estimate: a dropped page that
// was read again (a drop check reads it) maps the shared zero page, which
// mincore reports resident; smaps' Rss does not count it. Reading smaps does
// not touch the pages, so the kernel's idea of what is recently used stays
// the workload's own.
std::uint64_t droppable_rss() {
  FILE* f = std::fopen("/proc/self/smaps", "r");
  if (f == nullptr) return 0;
  char line[512];
  std::uint64_t total = 0, rss = 0;
  while (std::fgets(line, sizeof line, f) != nullptr) {
    if (std::strncmp(line, "Rss:", 4) == 0) {
      rss = std::strtoull(line + 4, nullptr, 10) * 1024;
    } else if (std::strncmp(line, "VmFlags:", 8) == 0) {
      if (std::strstr(line, " dp") != nullptr) total += rss;
      rss = 0;
    }
  }
  std::fclose(f);
  return total;
}

// Resident bytes of the resource's arenas. On the private fallback smaps
// cannot tell arenas from other anonymous memory, so the resource's own
// mincore estimate stands in (it counts a dropped page read again, which maps
// the zero page, as resident: an overestimate).
std::uint64_t cached_bytes(dropalloc::droppable_resource& res) {
  if (res.arena_backing() == dropalloc::backing::droppable) return droppable_rss();
  return res.stats().bytes_resident;
}

class sealed_cache {
 public:
  sealed_cache(std::uint64_t budget, pressure::adaptive_budget& adaptive, int rounds, pressure::checksums& expected)
      : cache_(options(budget)), adaptive_(adaptive), rounds_(rounds), expected_(expected) {}

  // After the driver moved the process into its cgroup.
  void keep_headroom(bool cap) {
    dropalloc::headroom_options o;
    o.cap = cap;
    keeper_ = std::make_unique<dropalloc::headroom_keeper>(dropalloc::shed_coldest(cache_), o);
  }

  std::uint64_t get(std::uint32_t key, bool* hit) {
    bool built = false;
    std::uint64_t sum = cache_.get_or_build(
        key,
        [&] {
          built = true;
          std::string v = pressure::build_value(key, rounds_);
          pressure::remember(expected_, key, pressure::checksum(v));
          return v;
        },
        // Runs on a private copy of the bytes, taken and then checked intact
        // before the visitor sees it.
        [](std::string_view v) { return pressure::checksum(v); });
    *hit = !built;
    if (built && adaptive_.adaptive()) {
      bool shrink = adaptive_.take_shrink();
      cache_.shed(adaptive_.budget());
      if (shrink) cache_.resource().trim();
    }
    return sum;
  }

  void sample(std::uint64_t* cached, std::uint64_t* live, std::uint64_t* drops) const {
    auto s = cache_.stats();
    *cached = cached_bytes(cache_.resource());
    *live = s.bytes_live;
    *drops = s.drops_detected;
  }

  dropalloc::backing backing() const { return cache_.resource().arena_backing(); }

 private:
  static dropalloc::cache_options options(std::uint64_t budget) {
    dropalloc::cache_options o;
    o.byte_budget = budget;
    return o;
  }
  dropalloc::cache<std::uint32_t> cache_;
  pressure::adaptive_budget& adaptive_;
  int rounds_;
  pressure::checksums& expected_;
  std::unique_ptr<dropalloc::headroom_keeper> keeper_;  // destroyed first: it sheds from cache_
};

class unsealed_cache {
 public:
  unsealed_cache(int rounds, pressure::checksums& expected) : rounds_(rounds), expected_(expected) {}
  ~unsealed_cache() {
    for (auto& [k, b] : blocks_) res_.deallocate(b.ptr, pressure::value_size(k));
  }

  // One lock around everything: a reference line, not a contender for speed.
  std::uint64_t get(std::uint32_t key, bool* hit) {
    std::lock_guard lock(mu_);
    auto it = blocks_.find(key);
    if (it != blocks_.end()) {
      std::uint64_t sum = pressure::checksum(static_cast<const char*>(it->second.ptr), pressure::value_size(key));
      if (sum == expected_[key].load(std::memory_order_relaxed)) {
        *hit = true;
        return sum;
      }
      ++drops_;  // zeroed pages: rebuild into the same block
    } else {
      it = blocks_.emplace(key, res_.allocate_block(pressure::value_size(key))).first;
      live_ += pressure::value_size(key);
    }
    std::string v = pressure::build_value(key, rounds_);
    std::uint64_t sum = pressure::remember(expected_, key, pressure::checksum(v));
    std::memcpy(it->second.ptr, v.data(), v.size());
    *hit = false;
    return sum;  // served from the builder's ordinary-memory copy
  }

  void sample(std::uint64_t* cached, std::uint64_t* live, std::uint64_t* drops) const {
    *cached = cached_bytes(res_);
    std::lock_guard lock(mu_);
    *live = live_;
    *drops = drops_;
  }

  dropalloc::backing backing() const { return res_.arena_backing(); }

 private:
  mutable dropalloc::droppable_resource res_;
  int rounds_;
  pressure::checksums& expected_;
  mutable std::mutex mu_;
  std::unordered_map<std::uint32_t, dropalloc::block_ref> blocks_;
  std::uint64_t live_ = 0, drops_ = 0;
};

template <class Cache>
void ready(Cache& c, std::uint32_t keys, std::uint64_t key_bytes, std::uint64_t budget) {
  std::printf("READY pid=%d alloc=dropalloc malloc_from=%s mapped=- backing=%s keys=%u key_bytes=%llu budget=%llu\n",
              static_cast<int>(getpid()), pressure::malloc_provider().c_str(),
              c.backing() == dropalloc::backing::droppable ? "droppable" : "private-fallback", keys,
              (unsigned long long)key_bytes, (unsigned long long)budget);
  pressure::wait_for_go();
}

}  // namespace

int main(int argc, char** argv) {
  pressure::line_buffered();
  pressure::options o = pressure::parse(argc, argv);
  std::uint64_t key_bytes = 0;
  std::uint32_t keys = pressure::key_count(4 * o.limit, &key_bytes);
  pressure::checksums expected(keys);
  if (o.kind == "sealed" || o.kind == "budget" || o.kind == "neighbour" || o.kind == "neighbour-uncapped" ||
      o.kind == "adaptive") {
    std::uint64_t budget = 0;
    if (o.kind == "budget") {
      // What the rest of this process may use: its resident set now, plus the
      // index (~200 B a key) and a few staging copies of the largest values.
      std::uint64_t rest = static_cast<std::uint64_t>(pressure::rss_kib()) * 1024 +
                           static_cast<std::uint64_t>(keys) * 200 + 8 * pressure::value_max + (4ull << 20);
      budget = o.budget != 0 ? o.budget : (o.limit > rest + o.limit / 4 ? o.limit - rest : o.limit / 4);
    }
    if (o.kind == "adaptive" && o.adapt_ms <= 0) {
      std::fprintf(stderr, "%s: --kind=adaptive needs --adapt-ms=N\n", argv[0]);
      return 2;
    }
    pressure::adaptive_budget adaptive(o.kind == "adaptive" ? o.adapt_ms : 0, 0);
    sealed_cache c(budget, adaptive, o.rounds, expected);
    ready(c, keys, key_bytes, budget);
    adaptive.start();
    if (o.kind == "neighbour" || o.kind == "neighbour-uncapped") c.keep_headroom(o.kind == "neighbour");
    return pressure::serve(c, o, keys, expected);
  }
  if (o.kind == "unsealed") {
    unsealed_cache c(o.rounds, expected);
    ready(c, keys, key_bytes, 0);
    return pressure::serve(c, o, keys, expected);
  }
  std::fprintf(stderr, "%s: --kind must be sealed, neighbour, neighbour-uncapped, budget, adaptive or unsealed\n",
               argv[0]);
  return 2;
}
