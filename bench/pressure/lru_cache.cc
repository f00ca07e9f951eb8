// Baseline contender of the cgroup pressure benchmark: a plain LRU cache with
// a fixed byte budget, values in std::vector<char>, nothing but malloc. The
// driver runs it as is (glibc) or with jemalloc/mimalloc LD_PRELOADed, and
// rejects a run whose READY line names another malloc.
//
//   pressure_lru --budget=BYTES --limit=BYTES --seconds=S --rounds=R
//   pressure_lru --calibrate=NS_PER_KIB     # prints the rounds for that cost
#include <cstdio>
#include <list>
#include <unordered_map>
#include <vector>

#include "bench/pressure/workload.h"

namespace {

class lru {
 public:
  lru(std::uint64_t budget, int rounds, std::vector<std::uint64_t>& expected)
      : budget_(budget), rounds_(rounds), expected_(expected) {}

  std::uint64_t get(std::uint32_t key, bool* hit) {
    auto it = index_.find(key);
    if (it != index_.end()) {
      order_.splice(order_.begin(), order_, it->second);
      *hit = true;
      const auto& v = it->second->value;
      return pressure::checksum(v.data(), v.size());
    }
    std::string built = pressure::build_value(key, rounds_);
    std::uint64_t sum = pressure::checksum(built);
    if (expected_[key] == 0) expected_[key] = sum;
    order_.push_front(node{key, std::vector<char>(built.begin(), built.end())});
    index_.emplace(key, order_.begin());
    bytes_ += built.size();
    while (budget_ != 0 && bytes_ > budget_ && order_.size() > 1) {
      bytes_ -= order_.back().value.size();
      index_.erase(order_.back().key);
      order_.pop_back();
    }
    // Served from the stored copy, as a hit would be.
    const auto& v = order_.front().value;
    return pressure::checksum(v.data(), v.size());
  }

  void sample(std::uint64_t* cached, std::uint64_t* live, std::uint64_t* drops) const {
    *cached = *live = bytes_;  // ordinary memory: all of it stays resident
    *drops = 0;
  }

 private:
  struct node {
    std::uint32_t key;
    std::vector<char> value;
  };
  std::uint64_t budget_, bytes_ = 0;
  int rounds_;
  std::vector<std::uint64_t>& expected_;
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
  std::printf("READY pid=%d alloc=%s malloc_from=%s mapped=%s backing=ordinary keys=%u key_bytes=%llu\n",
              static_cast<int>(getpid()), pressure::allocator_name(lib), lib.c_str(),
              pressure::mapped_allocators().c_str(), keys, (unsigned long long)key_bytes);
  pressure::wait_for_go();
  std::vector<std::uint64_t> expected(keys, 0);
  lru c(o.budget, o.rounds, expected);
  return pressure::serve(c, o, keys, expected);
}
