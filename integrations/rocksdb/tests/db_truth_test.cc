// RocksDB in this process with the dropalloc secondary cache behind a tiny
// LRU block cache: a small DB of values derived from their keys is read back
// again and again, with every droppable page zeroed in between (and, in the
// last case, while two threads read), as the kernel may do. Every value read
// must be the right one; the cache must have served hits and seen the drops.
#include <doctest/doctest.h>

#include <rocksdb/cache.h>
#include <rocksdb/convenience.h>
#include <rocksdb/db.h>
#include <rocksdb/options.h>
#include <rocksdb/table.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "integrations/rocksdb/secondary_cache.h"

namespace {

using dropalloc::rocks::secondary_cache;

constexpr int kKeys = 20000;

std::string key_of(int i) {
  char k[16];
  std::snprintf(k, sizeof k, "key%08d", i);
  return k;
}

// 200-599 bytes derived from i: a wrong, torn or zeroed value cannot match.
// Half of each value repeats so that LZ4 has something to compress.
std::string value_of(int i) {
  std::uint64_t x = static_cast<std::uint64_t>(i) * 0x9e3779b97f4a7c15ull + 1;
  std::string v(200 + static_cast<std::size_t>(i % 400), '\0');
  for (std::size_t j = 0; j < v.size(); ++j) {
    if (j % 2 == 0) x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    v[j] = j % 2 == 0 ? static_cast<char>(x) : 'v';
  }
  return v;
}

std::string db_dir() {
  const char* t = std::getenv("TEST_TMPDIR");
  return std::string(t != nullptr ? t : "/tmp") + "/dropalloc-rocksdb-truth";
}

rocksdb::CompressionType compression() {
  for (auto c : rocksdb::GetSupportedCompressions()) {
    if (c == rocksdb::kLZ4Compression) return c;
  }
  return rocksdb::kNoCompression;
}

// Builds the DB once per process.
void build_db() {
  static bool built = [] {
    rocksdb::Options o;
    o.create_if_missing = true;
    o.compression = compression();
    REQUIRE(rocksdb::DestroyDB(db_dir(), o).ok());
    rocksdb::DB* raw = nullptr;
    rocksdb::Status s = rocksdb::DB::Open(o, db_dir(), &raw);
    REQUIRE_MESSAGE(s.ok(), s.ToString());
    std::unique_ptr<rocksdb::DB> db(raw);
    for (int i = 0; i < kKeys; ++i) REQUIRE(db->Put(rocksdb::WriteOptions(), key_of(i), value_of(i)).ok());
    REQUIRE(db->Flush(rocksdb::FlushOptions()).ok());
    REQUIRE(db->CompactRange(rocksdb::CompactRangeOptions(), nullptr, nullptr).ok());
    REQUIRE(db->Close().ok());
    return true;
  }();
  (void)built;
}

struct opened {
  std::shared_ptr<secondary_cache> sec;
  std::unique_ptr<rocksdb::DB> db;
};

opened open_db(bool seal) {
  build_db();
  opened r;
  dropalloc::rocks::secondary_cache_options so;
  so.seal = seal;
  r.sec = std::make_shared<secondary_cache>(so);
  rocksdb::LRUCacheOptions lru;
  lru.capacity = 64 * 1024;  // a few blocks: nearly every read goes past it
  lru.num_shard_bits = 0;
  lru.secondary_cache = r.sec;
  rocksdb::BlockBasedTableOptions t;
  t.block_cache = rocksdb::NewLRUCache(lru);
  rocksdb::Options o;
  o.table_factory.reset(rocksdb::NewBlockBasedTableFactory(t));
  o.compression = compression();
  rocksdb::DB* raw = nullptr;
  rocksdb::Status s = rocksdb::DB::OpenForReadOnly(o, db_dir(), &raw);
  REQUIRE_MESSAGE(s.ok(), s.ToString());
  r.db.reset(raw);
  return r;
}

// Reads keys [0, kKeys) in a scattered order; returns how many were wrong
// (absent or with other bytes).
int read_all(rocksdb::DB& db, int stride = 7919) {
  int wrong = 0;
  std::string v;
  for (int n = 0; n < kKeys; ++n) {
    int i = static_cast<int>((static_cast<long>(n) * stride) % kKeys);
    rocksdb::Status s = db.Get(rocksdb::ReadOptions(), key_of(i), &v);
    if (!s.ok() || v != value_of(i)) ++wrong;
  }
  return wrong;
}

}  // namespace

TEST_CASE("values read through the secondary cache are right, before and after every page is dropped") {
  for (bool seal : {true, false}) {
    CAPTURE(seal);
    opened r = open_db(seal);
    CHECK(read_all(*r.db) == 0);  // fills the secondary cache from the primary's evictions
    CHECK(r.sec->stats().inserts > 0);
    CHECK(read_all(*r.db) == 0);
    auto warm = r.sec->stats();
    CHECK(warm.hits > 0);  // served from droppable memory
    r.sec->drop_all_for_testing();
    CHECK(read_all(*r.db) == 0);  // every block lost: read from the files again
    auto after = r.sec->stats();
    CHECK(after.drops_detected > 0);
    CHECK(read_all(*r.db) == 0);  // stored again and served again
    CHECK(r.sec->stats().hits > after.hits);
    MESSAGE(std::string(seal ? "sealed" : "unsealed") << ": " << r.sec->stats().hits << " hits, "
                                                       << r.sec->stats().drops_detected << " drops detected");
  }
}

TEST_CASE("two readers while pages are dropped under them: no wrong value") {
  opened r = open_db(true);
  std::atomic<bool> stop{false};
  std::atomic<int> wrong{0};
  std::vector<std::thread> readers;
  for (int t = 0; t < 2; ++t) {
    readers.emplace_back([&, t] {
      for (int round = 0; round < 3; ++round) wrong += read_all(*r.db, t == 0 ? 7919 : 104729);
    });
  }
  std::thread dropper([&] {
    while (!stop.load()) {
      r.sec->drop_all_for_testing();
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  });
  for (auto& th : readers) th.join();
  stop = true;
  dropper.join();
  CHECK(wrong.load() == 0);
  auto st = r.sec->stats();
  MESSAGE(st.hits << " hits, " << st.drops_detected << " drops detected, " << st.insert_rejects
                  << " inserts lost while written");
  CHECK(st.drops_detected > 0);
}
