// The truth check of the RocksDB benchmark (bench/rocksdb.py): a DB whose
// values are derived from their keys, read back through a block cache
// configured as db_bench's (--cache_size, --secondary_cache_uri) under the
// same cgroup pressure, counting every value that is not the one derived
// from its key.
//
//   truth --build --db=DIR --num=N             writes the DB (once; LZ4)
//   truth --db=DIR --num=N --seconds=S [--threads=2] [--cache_size=B]
//         [--secondary_cache_uri=U] [--exp_range=10] [--direct_reads=1]
//
// Run mode talks to the driver like the other pressure workers: prints
// "READY pid=<p>", waits for a byte on stdin (it is moved into the cgroup
// first), then "S t=<monotonic s> ops=<total> wrong=<total>" every 0.5 s and
// "END ops= wrong= missing= seconds=" at the end, then "SEC name=value" for
// each line of the secondary cache's printable options.
#include <rocksdb/cache.h>
#include <rocksdb/convenience.h>
#include <rocksdb/db.h>
#include <rocksdb/secondary_cache.h>
#include <rocksdb/table.h>

#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "bench/pressure/workload.h"

namespace {

struct args {
  bool build = false;
  std::string db;
  long num = 0;
  double seconds = 10;
  int threads = 2;
  std::size_t cache_size = 32u << 20;
  std::string secondary;
  double exp_range = 10;
  bool direct_reads = true;
};

std::string key_of(long i) {
  char k[17];
  std::snprintf(k, sizeof k, "%016ld", i);
  return k;
}

// 400 bytes: even bytes from a generator seeded by the key, odd bytes a
// constant, so LZ4 halves it as it halves db_bench's values.
std::string value_of(long i) {
  std::string v(400, 'v');
  pressure::rng r(static_cast<std::uint64_t>(i) * 0x9e3779b97f4a7c15ull + 17);
  for (std::size_t j = 0; j < v.size(); j += 2) v[j] = static_cast<char>(r.next());
  return v;
}

// Skewed like db_bench's --read_random_exp_range: an index exponentially
// distributed over [0, num), then scattered so hot keys are not neighbours.
long pick(pressure::rng& r, long num, double exp_range) {
  if (exp_range <= 0) return static_cast<long>(r.next() % static_cast<std::uint64_t>(num));
  auto idx = static_cast<std::uint64_t>(static_cast<double>(num) * std::exp(-exp_range * r.unit()));
  if (idx >= static_cast<std::uint64_t>(num)) idx = static_cast<std::uint64_t>(num) - 1;
  return static_cast<long>((idx * 2654435761ull) % static_cast<std::uint64_t>(num));
}

bool parse(int argc, char** argv, args* a) {
  for (int i = 1; i < argc; ++i) {
    std::string_view s = argv[i];
    auto val = [&](std::string_view name) -> const char* {
      return s.rfind(name, 0) == 0 ? argv[i] + name.size() : nullptr;
    };
    if (s == "--build") a->build = true;
    else if (const char* v = val("--db=")) a->db = v;
    else if (const char* v = val("--num=")) a->num = std::atol(v);
    else if (const char* v = val("--seconds=")) a->seconds = std::atof(v);
    else if (const char* v = val("--threads=")) a->threads = std::atoi(v);
    else if (const char* v = val("--cache_size=")) a->cache_size = std::strtoull(v, nullptr, 10);
    else if (const char* v = val("--secondary_cache_uri=")) a->secondary = v;
    else if (const char* v = val("--exp_range=")) a->exp_range = std::atof(v);
    else if (const char* v = val("--direct_reads=")) a->direct_reads = std::atoi(v) != 0;
    else return false;
  }
  return !a->db.empty() && a->num > 0 && a->threads > 0;
}

int build(const args& a) {
  rocksdb::Options o;
  o.create_if_missing = true;
  o.error_if_exists = true;
  o.compression = rocksdb::kLZ4Compression;
  rocksdb::DB* raw = nullptr;
  rocksdb::Status s = rocksdb::DB::Open(o, a.db, &raw);
  if (!s.ok()) return std::fprintf(stderr, "truth: open %s: %s\n", a.db.c_str(), s.ToString().c_str()), 1;
  std::unique_ptr<rocksdb::DB> db(raw);
  rocksdb::WriteOptions w;
  w.disableWAL = true;  // the DB is flushed and compacted below
  for (long i = 0; i < a.num;) {
    rocksdb::WriteBatch b;
    for (long end = std::min(a.num, i + 1000); i < end; ++i) b.Put(key_of(i), value_of(i));
    if (!(s = db->Write(w, &b)).ok()) return std::fprintf(stderr, "truth: write: %s\n", s.ToString().c_str()), 1;
  }
  if (!(s = db->Flush(rocksdb::FlushOptions())).ok() ||
      !(s = db->CompactRange(rocksdb::CompactRangeOptions(), nullptr, nullptr)).ok() || !(s = db->Close()).ok()) {
    return std::fprintf(stderr, "truth: flush/compact: %s\n", s.ToString().c_str()), 1;
  }
  return 0;
}

int serve(const args& a) {
  std::printf("READY pid=%d\n", static_cast<int>(getpid()));
  pressure::wait_for_go();
  rocksdb::LRUCacheOptions lru;
  lru.capacity = a.cache_size;
  if (!a.secondary.empty()) {
    rocksdb::Status s = rocksdb::SecondaryCache::CreateFromString(rocksdb::ConfigOptions(), a.secondary,
                                                                  &lru.secondary_cache);
    if (!s.ok() || !lru.secondary_cache) {
      std::fprintf(stderr, "truth: secondary cache %s: %s\n", a.secondary.c_str(), s.ToString().c_str());
      return 2;
    }
  }
  rocksdb::BlockBasedTableOptions t;
  t.block_cache = rocksdb::NewLRUCache(lru);
  rocksdb::Options o;
  o.table_factory.reset(rocksdb::NewBlockBasedTableFactory(t));
  o.use_direct_reads = a.direct_reads;
  rocksdb::DB* raw = nullptr;
  rocksdb::Status s = rocksdb::DB::OpenForReadOnly(o, a.db, &raw);
  if (!s.ok()) return std::fprintf(stderr, "truth: open %s: %s\n", a.db.c_str(), s.ToString().c_str()), 1;
  std::unique_ptr<rocksdb::DB> db(raw);

  std::atomic<long> ops{0}, wrong{0}, missing{0};
  std::atomic<bool> stop{false};
  double t0 = pressure::now_s();
  std::vector<std::thread> readers;
  for (int th = 0; th < a.threads; ++th) {
    readers.emplace_back([&, th] {
      pressure::rng r(0x5eed + static_cast<std::uint64_t>(th));
      std::string v;
      while (!stop.load(std::memory_order_relaxed)) {
        long i = pick(r, a.num, a.exp_range);
        rocksdb::Status st = db->Get(rocksdb::ReadOptions(), key_of(i), &v);
        if (st.IsNotFound()) missing.fetch_add(1, std::memory_order_relaxed);
        if (!st.ok() || v != value_of(i)) wrong.fetch_add(1, std::memory_order_relaxed);
        ops.fetch_add(1, std::memory_order_relaxed);
      }
    });
  }
  while (pressure::now_s() < t0 + a.seconds) {
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    std::printf("S t=%.4f ops=%ld wrong=%ld\n", pressure::now_s(), ops.load(), wrong.load());
  }
  stop = true;
  for (auto& th : readers) th.join();
  std::printf("END ops=%ld wrong=%ld missing=%ld seconds=%.3f\n", ops.load(), wrong.load(), missing.load(),
              pressure::now_s() - t0);
  if (lru.secondary_cache) {
    std::istringstream in(lru.secondary_cache->GetPrintableOptions());
    // "    name: value" lines become "SEC name=value" for the driver's parser.
    for (std::string line; std::getline(in, line);) {
      std::size_t b = line.find_first_not_of(' '), colon = line.find(": ");
      if (b == std::string::npos || colon == std::string::npos || colon < b) continue;
      std::printf("SEC %s=%s\n", line.substr(b, colon - b).c_str(), line.substr(colon + 2).c_str());
    }
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  pressure::line_buffered();
  args a;
  if (!parse(argc, argv, &a)) {
    std::fprintf(stderr,
                 "usage: %s --build --db=DIR --num=N\n"
                 "       %s --db=DIR --num=N --seconds=S [--threads=T] [--cache_size=B]\n"
                 "          [--secondary_cache_uri=U] [--exp_range=X] [--direct_reads=0|1]\n",
                 argv[0], argv[0]);
    return 2;
  }
  return a.build ? build(a) : serve(a);
}
