// dropalloc contenders of the cgroup pressure benchmark (bench/pressure.py):
//
//   --kind=sealed    dropalloc::cache<uint32_t> (byte values, sealed,
//                    verified after writing), no budget: the kernel's LRU
//                    dropping of sealed pages decides what stays.
//   --kind=budget    the same with byte_budget set from the cgroup limit at
//                    start: limit minus this process's resident set and a
//                    margin for the index and the builder's staging copies.
//   --kind=unsealed  values copied into droppable_resource blocks and never
//                    sealed: under a cgroup limit the kernel drops dirty
//                    droppable pages nearly all at once, sealed ones
//                    gradually, least recently used first. An unsealed block is never vouched
//                    for by check(), so a hit is verified with the checksum
//                    alone: a mismatch is a detected drop (miss + rebuild),
//                    never served, and so can never count as wrong data.
#include <cstdio>
#include <string>
#include <unordered_map>
#include <vector>

#include "allocator/dropalloc.h"
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
  sealed_cache(std::uint64_t budget, int rounds, std::vector<std::uint64_t>& expected)
      : cache_(options(budget)), rounds_(rounds), expected_(expected) {}

  std::uint64_t get(std::uint32_t key, bool* hit) {
    bool built = false;
    std::uint64_t sum = cache_.get_or_build(
        key,
        [&] {
          built = true;
          std::string v = pressure::build_value(key, rounds_);
          if (expected_[key] == 0) expected_[key] = pressure::checksum(v);
          return v;
        },
        // Runs on a private copy of the bytes, taken and then checked intact
        // before the visitor sees it.
        [](std::string_view v) { return pressure::checksum(v); });
    *hit = !built;
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
  int rounds_;
  std::vector<std::uint64_t>& expected_;
};

class unsealed_cache {
 public:
  unsealed_cache(int rounds, std::vector<std::uint64_t>& expected) : rounds_(rounds), expected_(expected) {}
  ~unsealed_cache() {
    for (auto& [k, b] : blocks_) res_.deallocate(b.ptr, pressure::value_size(k));
  }

  std::uint64_t get(std::uint32_t key, bool* hit) {
    auto it = blocks_.find(key);
    if (it != blocks_.end()) {
      std::uint64_t sum = pressure::checksum(static_cast<const char*>(it->second.ptr), pressure::value_size(key));
      if (sum == expected_[key]) {
        *hit = true;
        return sum;
      }
      ++drops_;  // zeroed pages: rebuild into the same block
    } else {
      it = blocks_.emplace(key, res_.allocate_block(pressure::value_size(key))).first;
      live_ += pressure::value_size(key);
    }
    std::string v = pressure::build_value(key, rounds_);
    std::uint64_t sum = pressure::checksum(v);
    if (expected_[key] == 0) expected_[key] = sum;
    std::memcpy(it->second.ptr, v.data(), v.size());
    *hit = false;
    return sum;  // served from the builder's ordinary-memory copy
  }

  void sample(std::uint64_t* cached, std::uint64_t* live, std::uint64_t* drops) const {
    *cached = cached_bytes(res_);
    *live = live_;
    *drops = drops_;
  }

  dropalloc::backing backing() const { return res_.arena_backing(); }

 private:
  mutable dropalloc::droppable_resource res_;
  int rounds_;
  std::vector<std::uint64_t>& expected_;
  std::unordered_map<std::uint32_t, dropalloc::block_ref> blocks_;
  std::uint64_t live_ = 0, drops_ = 0;
};

template <class Cache>
int run(Cache& c, const pressure::options& o, std::uint32_t keys, std::uint64_t key_bytes,
        std::vector<std::uint64_t>& expected, std::uint64_t budget) {
  std::printf("READY pid=%d alloc=dropalloc malloc_from=%s mapped=- backing=%s keys=%u key_bytes=%llu budget=%llu\n",
              static_cast<int>(getpid()), pressure::malloc_provider().c_str(),
              c.backing() == dropalloc::backing::droppable ? "droppable" : "private-fallback", keys,
              (unsigned long long)key_bytes, (unsigned long long)budget);
  pressure::wait_for_go();
  return pressure::serve(c, o, keys, expected);
}

}  // namespace

int main(int argc, char** argv) {
  pressure::line_buffered();
  pressure::options o = pressure::parse(argc, argv);
  std::uint64_t key_bytes = 0;
  std::uint32_t keys = pressure::key_count(4 * o.limit, &key_bytes);
  std::vector<std::uint64_t> expected(keys, 0);
  if (o.kind == "sealed" || o.kind == "budget") {
    std::uint64_t budget = 0;
    if (o.kind == "budget") {
      // What the rest of this process may use: its resident set now, plus the
      // index (~200 B a key) and a few staging copies of 64 KiB values.
      std::uint64_t rest = static_cast<std::uint64_t>(pressure::rss_kib()) * 1024 +
                           static_cast<std::uint64_t>(keys) * 200 + (8ull << 20);
      budget = o.budget != 0 ? o.budget : (o.limit > rest + o.limit / 4 ? o.limit - rest : o.limit / 4);
    }
    sealed_cache c(budget, o.rounds, expected);
    return run(c, o, keys, key_bytes, expected, budget);
  }
  if (o.kind == "unsealed") {
    unsealed_cache c(o.rounds, expected);
    return run(c, o, keys, key_bytes, expected, 0);
  }
  std::fprintf(stderr, "%s: --kind must be sealed, budget or unsealed\n", argv[0]);
  return 2;
}
