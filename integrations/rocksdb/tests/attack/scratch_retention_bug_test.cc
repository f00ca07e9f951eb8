// Insert and Lookup serialise and copy blocks through a thread_local
// std::string (secondary_cache.cc, scratch()) that grows to the largest block
// the thread ever saw and is never shrunk or freed while the thread lives,
// not even when the cache is destroyed. That is ordinary (not droppable)
// memory: one large block (a blob, a big index or filter partition) pins its
// size in every RocksDB thread that touched it, charged to the cgroup and
// never given back under pressure.
#include <doctest/doctest.h>

#include <malloc.h>

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "integrations/rocksdb/secondary_cache.h"
#include "integrations/rocksdb/tests/string_item.h"

namespace {

using namespace dropalloc::rocks;
using namespace dropalloc::rocks::testing;

std::size_t malloc_in_use() {
  struct mallinfo2 m = mallinfo2();
  return m.uordblks + m.hblkhd;
}

}  // namespace

TEST_CASE("a 64 MiB block leaves 64 MiB of ordinary memory in each thread after the cache is gone") {
  constexpr std::size_t kBig = 64u << 20;
  constexpr int kThreads = 4;
  std::size_t before = malloc_in_use();
  std::vector<std::thread> ts;
  std::atomic<int> done{0}, release{0};
  {
    secondary_cache_options o;
    secondary_cache c(o);
    for (int t = 0; t < kThreads; ++t) {
      ts.emplace_back([&, t] {
        std::string key = "big" + std::to_string(t);
        {
          std::string v(kBig, 'x');
          REQUIRE(c.Insert(key, &v, &kHelper).ok());
        }
        bool in = false;
        auto h = c.Lookup(key, create_string(), true, false, in);
        if (h) delete static_cast<std::string*>(h->Value());
        done++;
        while (!release.load()) std::this_thread::yield();  // the thread lives on, as RocksDB's do
      });
    }
    while (done.load() < kThreads) std::this_thread::yield();
  }  // the cache is destroyed
  std::size_t after = malloc_in_use();
  std::size_t kept = after > before ? after - before : 0;
  MESSAGE("ordinary memory still in use after the cache was destroyed: ", kept >> 20, " MiB");
  release = 1;
  for (auto& t : ts) t.join();
  CHECK(kept < kBig);  // fails: about kThreads * 64 MiB
}
