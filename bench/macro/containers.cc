// containers: an ordinary C++ program whose memory traffic is the standard
// containers' own (std::map, std::unordered_map, std::vector<std::string>,
// std::list), the way application code uses them. compare.py runs it as a
// real program: the whole process is timed and measured from outside; the
// RESULT line (workload.h) says which malloc it ran on.
//
// Each round: builds a vector of strings (8-80 characters, so both short ones
// kept inside std::string and heap-allocated ones), counts them in a
// std::map<std::string, int>, drops a third of the map; fills an
// std::unordered_map<std::uint64_t, std::string> and erases half of it; churns
// an std::list<std::string> (push at both ends, splice, remove_if); sorts the
// vector. Half of the previous round's containers live on into the next one.
#include <algorithm>
#include <list>
#include <map>
#include <string>
#include <unordered_map>
#include <vector>

#include "bench/macro/workload.h"

namespace {

std::string make_word(bench::rng& r) {
  const std::size_t len = r.range(8, 80);
  std::string s(len, 'a');
  for (char& c : s) c = static_cast<char>('a' + r.next() % 26);
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  const bench::options o = bench::parse(argc, argv);
  const int rounds = o.quick ? 2 : 6;
  const std::size_t n = o.quick ? 5000 : 50000;
  bench::rng r(20240611);
  std::uint64_t check = 0, ops = 0;
  std::vector<std::string> kept;
  std::map<std::string, int> kept_counts;
  bench::timer clock;
  for (int round = 0; round < rounds; ++round) {
    std::vector<std::string> words;
    for (std::size_t i = 0; i < n; ++i) {
      // One word in four repeats an earlier one, so the map counts something.
      if (i > 0 && r.next() % 4 == 0) words.push_back(words[r.next() % i]);
      else words.push_back(make_word(r));
    }
    std::map<std::string, int> counts = std::move(kept_counts);
    for (const std::string& w : words) ++counts[w];
    for (auto it = counts.begin(); it != counts.end();) {
      if (r.next() % 3 == 0) it = counts.erase(it);
      else ++it;
    }
    std::unordered_map<std::uint64_t, std::string> by_id;
    for (std::size_t i = 0; i < n; ++i) by_id.emplace(r.next(), words[i]);
    for (auto it = by_id.begin(); it != by_id.end();) {
      if (it->first & 1) it = by_id.erase(it);
      else ++it;
    }
    std::list<std::string> queue, other;
    for (std::size_t i = 0; i < n; ++i) {
      if (i & 1) queue.push_back(words[i]);
      else queue.push_front(words[i]);
      if (queue.size() > 1000) {
        other.splice(other.end(), queue, queue.begin());
        queue.pop_back();
      }
    }
    other.remove_if([](const std::string& s) { return s.size() > 40; });
    std::sort(words.begin(), words.end());
    check += counts.size() + by_id.size() + queue.size() + other.size() + words.front().size() +
             static_cast<unsigned char>(words.back()[0]);
    ops += 5 * n;
    // Half of this round outlives it.
    words.resize(words.size() / 2);
    kept.insert(kept.end(), words.begin(), words.end());
    for (auto it = counts.begin(); it != counts.end(); ++it) {
      if (r.next() % 2 == 0) kept_counts.emplace(it->first, it->second);
    }
  }
  check += kept.size() + kept_counts.size();
  bench::report("containers", clock.seconds(), ops, check);
}
