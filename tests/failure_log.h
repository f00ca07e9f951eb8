// Oracle failures of every thread of a randomized test: the first report of
// each oracle in full, and how often each fired (a run told to keep going
// after a failure shows which other oracles fire too).
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace dropalloc::testing {

class failure_log {
 public:
  void add(const std::string& oracle, const std::string& msg) {
    std::lock_guard<std::mutex> g(m_);
    auto [it, fresh] = by_oracle_.try_emplace(oracle, msg, 0);
    ++it->second.second;
    if (fresh) order_.push_back(oracle);
    any_.store(true, std::memory_order_release);
  }
  bool any() const { return any_.load(std::memory_order_acquire); }
  std::string all() const {
    std::lock_guard<std::mutex> g(m_);
    std::string out;
    for (const auto& o : order_) {
      const auto& [msg, n] = by_oracle_.at(o);
      out += msg + "\n  (oracle " + o + " fired " + std::to_string(n) + " time(s))\n";
    }
    return out;
  }

 private:
  mutable std::mutex m_;
  std::vector<std::string> order_;
  std::map<std::string, std::pair<std::string, std::uint64_t>> by_oracle_;
  std::atomic<bool> any_{false};
};

}  // namespace dropalloc::testing
