// The address ranges of the blocks a test holds live, for tests that check
// that no two live blocks overlap while threads allocate, resize and free.
#pragma once

#include <cstddef>
#include <cstdint>
#include <iterator>
#include <map>
#include <mutex>

namespace dropalloc::testing {

class live_set {
 public:
  // False if [p, p + n) overlaps a live range (its start in *hit, if given).
  bool add(const void* p, std::size_t n, std::uintptr_t* hit = nullptr) {
    std::lock_guard<std::mutex> g(m_);
    auto a = reinterpret_cast<std::uintptr_t>(p);
    auto it = iv_.lower_bound(a);
    if (it != iv_.end() && it->first < a + n) return overlaps(it->first, hit);
    if (it != iv_.begin() && std::prev(it)->first + std::prev(it)->second > a) {
      return overlaps(std::prev(it)->first, hit);
    }
    iv_.emplace(a, n);
    return true;
  }
  // False if p is not live, or its new length would reach the next range
  // (that range's start in *hit, if given).
  bool resize(const void* p, std::size_t n, std::uintptr_t* hit = nullptr) {
    std::lock_guard<std::mutex> g(m_);
    auto a = reinterpret_cast<std::uintptr_t>(p);
    auto it = iv_.find(a);
    if (it == iv_.end()) return false;
    auto nx = std::next(it);
    if (nx != iv_.end() && nx->first < a + n) return overlaps(nx->first, hit);
    it->second = n;
    return true;
  }
  // False if p was not live.
  bool remove(const void* p) {
    std::lock_guard<std::mutex> g(m_);
    return iv_.erase(reinterpret_cast<std::uintptr_t>(p)) == 1;
  }
  bool empty() {
    std::lock_guard<std::mutex> g(m_);
    return iv_.empty();
  }

 private:
  static bool overlaps(std::uintptr_t start, std::uintptr_t* hit) {
    if (hit != nullptr) *hit = start;
    return false;
  }
  std::mutex m_;
  std::map<std::uintptr_t, std::size_t> iv_;  // start -> length
};

}  // namespace dropalloc::testing
