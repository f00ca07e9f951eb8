// Baseline contender of the cgroup pressure benchmark: a plain LRU cache,
// values in std::vector<char>, nothing but malloc. Its budget is fixed
// (--budget) or adaptive (--adapt-ms: see adaptive.h); after an adaptive
// shrink the serving thread evicts to the new budget and asks the malloc to
// hand the freed memory back (give_back.h). The driver runs it as is (glibc)
// or with jemalloc/mimalloc LD_PRELOADed, and rejects a run whose READY line
// names another malloc.
//
//   pressure_lru --budget=BYTES | --adapt-ms=MS  --limit=BYTES --seconds=S --rounds=R [--threads=N]
//   pressure_lru --calibrate=NS_PER_KIB     # prints the rounds for that cost
#include <cstdio>
#include <list>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "bench/pressure/adaptive.h"
#include "bench/pressure/give_back.h"
#include "bench/pressure/workload.h"

namespace {

class lru {
 public:
  lru(pressure::adaptive_budget& budget, const pressure::give_back& give_back, int rounds,
      pressure::checksums& expected)
      : budget_(budget), give_back_(give_back), rounds_(rounds), expected_(expected) {}

  std::uint64_t get(std::uint32_t key, bool* hit) {
    {
      std::lock_guard lock(mu_);
      auto it = index_.find(key);
      if (it != index_.end()) {
        order_.splice(order_.begin(), order_, it->second);
        *hit = true;
        const auto& v = it->second->value;
        return pressure::checksum(v.data(), v.size());
      }
    }
    // Built outside the lock, so that other threads keep serving meanwhile.
    std::string built = pressure::build_value(key, rounds_);
    pressure::remember(expected_, key, pressure::checksum(built));
    std::vector<char> value(built.begin(), built.end());
    std::uint64_t sum = pressure::checksum(value.data(), value.size());  // from the stored copy, as a hit would be
    bool shrink = budget_.take_shrink();
    std::list<node> victims;  // freed after the lock is dropped
    {
      std::lock_guard lock(mu_);
      if (index_.find(key) == index_.end()) {
        order_.push_front(node{key, std::move(value)});
        index_.emplace(key, order_.begin());
        bytes_ += built.size();
      }
      std::uint64_t b = budget_.budget();
      while (b != 0 && bytes_ > b && order_.size() > 1) {
        bytes_ -= order_.back().value.size();
        index_.erase(order_.back().key);
        victims.splice(victims.begin(), order_, std::prev(order_.end()));
      }
    }
    victims.clear();
    if (shrink) give_back_();
    *hit = false;
    return sum;
  }

  void sample(std::uint64_t* cached, std::uint64_t* live, std::uint64_t* drops) const {
    std::lock_guard lock(mu_);
    *cached = *live = bytes_;  // ordinary memory: all of it stays resident
    *drops = 0;
  }

 private:
  struct node {
    std::uint32_t key;
    std::vector<char> value;
  };
  pressure::adaptive_budget& budget_;
  const pressure::give_back& give_back_;
  int rounds_;
  pressure::checksums& expected_;
  mutable std::mutex mu_;
  std::uint64_t bytes_ = 0;
  std::list<node> order_;
  std::unordered_map<std::uint32_t, std::list<node>::iterator> index_;
};

}  // namespace

int main(int argc, char** argv) {
  pressure::line_buffered();
  pressure::options o = pressure::parse(argc, argv);
  if (o.calibrate_ns_per_kib > 0) {
    std::printf("%d\n", pressure::calibrate(o.calibrate_ns_per_kib));
    return 0;
  }
  std::uint64_t key_bytes = 0;
  std::uint32_t keys = pressure::key_count(4 * o.limit, &key_bytes);
  std::string lib = pressure::malloc_provider();
  const char* alloc = pressure::allocator_name(lib);
  pressure::give_back give_back(alloc);
  std::printf("READY pid=%d alloc=%s malloc_from=%s mapped=%s backing=ordinary keys=%u key_bytes=%llu "
              "give_back=%s\n",
              static_cast<int>(getpid()), alloc, lib.c_str(), pressure::mapped_allocators().c_str(), keys,
              (unsigned long long)key_bytes, o.adapt_ms > 0 ? give_back.name() : "-");
  pressure::wait_for_go();
  pressure::checksums expected(keys);
  pressure::adaptive_budget budget(o.adapt_ms, o.budget);
  budget.start();
  lru c(budget, give_back, o.rounds, expected);
  return pressure::serve(c, o, keys, expected);
}
