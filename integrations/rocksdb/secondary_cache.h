// dropalloc::rocks::secondary_cache: a rocksdb::SecondaryCache (RocksDB 7.8)
// whose blocks live in droppable memory. The primary LRU cache offers it the
// blocks it evicts and asks it before reading from disk; a block the kernel
// took back is reported as a miss, so RocksDB reads it from the SST file again.
//
// Keys, the index and the LRU lists are in ordinary memory, split into shards
// with a lock each. Values are the bytes the CacheItemHelper's saveto callback
// writes, copied in with write_and_seal (verified, no torn-write window).
// Lookup copies a block out under its shard's lock, checks it again after the
// copy, and only then calls create_cb on the private copy: RocksDB never parses
// bytes that were lost, and nothing created has to be deleted.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <iosfwd>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include <rocksdb/secondary_cache.h>

#include "allocator/cache/pressure.h"
#include "allocator/pmr/droppable_resource.h"
#include "integrations/rocksdb/uri_options.h"

namespace dropalloc::rocks {

struct secondary_cache_stats {
  std::uint64_t inserts = 0;          // blocks stored
  std::uint64_t insert_rejects = 0;   // not stored: lost while written, no memory, or a callback failed
  std::uint64_t reinserts_kept = 0;   // offered again while held intact with the same bytes: kept as is
  std::uint64_t lookups = 0;
  std::uint64_t hits = 0;             // served intact
  std::uint64_t misses = 0;           // absent, lost, or create_cb failed
  std::uint64_t drops_detected = 0;   // blocks found lost (at a lookup or by the cold-end sweep)
  std::uint64_t evictions = 0;        // removed to keep within the capacity or the cgroup limit
  std::uint64_t erases = 0;           // removed because RocksDB asked
  std::uint64_t entries = 0;          // blocks held now
  std::uint64_t bytes = 0;            // their bytes as RocksDB gave them
  std::uint64_t bytes_inserted = 0;   // cumulative
  std::uint64_t bytes_hit = 0;        // cumulative, served by hits
  std::uint64_t bytes_resident = 0;   // of the resource's memory, resident now
};

class secondary_cache final : public rocksdb::SecondaryCache {
 public:
  explicit secondary_cache(const secondary_cache_options& options,
                           const resource_options& resource = resource_options{});
  ~secondary_cache() override;
  secondary_cache(const secondary_cache&) = delete;
  secondary_cache& operator=(const secondary_cache&) = delete;

  // Parses a URI (uri_options.h) and makes the cache; InvalidArgument naming
  // the bad option otherwise.
  static rocksdb::Status create(const std::string& uri, std::shared_ptr<rocksdb::SecondaryCache>* out);

  const char* Name() const override { return "DropallocSecondaryCache"; }
  rocksdb::Status Insert(const rocksdb::Slice& key, void* value,
                         const rocksdb::Cache::CacheItemHelper* helper) override;
  std::unique_ptr<rocksdb::SecondaryCacheResultHandle> Lookup(const rocksdb::Slice& key,
                                                              const rocksdb::Cache::CreateCallback& create_cb,
                                                              bool wait, bool advise_erase,
                                                              bool& is_in_sec_cache) override;
  // advise_erase is ignored (see Lookup): a hit stays in this cache.
  bool SupportForceErase() const override { return false; }
  void Erase(const rocksdb::Slice& key) override;
  // Lookups complete before they return: nothing to wait for.
  void WaitAll(std::vector<rocksdb::SecondaryCacheResultHandle*> handles) override;
  // 0: no fixed capacity (budget=fixed refuses it). Lowering it evicts now.
  rocksdb::Status SetCapacity(std::size_t capacity) override;
  rocksdb::Status GetCapacity(std::size_t& capacity) override;
  // The options and the statistics, one "name: value" per line.
  std::string GetPrintableOptions() const override;

  secondary_cache_stats stats() const;
  void print_stats(std::ostream& out) const;
  const secondary_cache_options& options() const noexcept { return options_; }

  // Tests: zero every block's pages now, as the kernel may; or one key's block.
  void drop_all_for_testing() noexcept { res_.drop_all_for_testing(); }
  bool drop_for_testing(const rocksdb::Slice& key);

 private:
  struct entry {
    std::string key;
    block_ref block;
    std::size_t size = 0;
    std::uint64_t checksum = 0;  // seal=0 only: how a lookup detects a loss
  };
  using lru_list = std::list<entry>;  // front: most recently used
  struct shard {
    mutable std::mutex mu;
    lru_list lru;
    std::unordered_map<std::string_view, lru_list::iterator> index;  // views of the entries' keys
    std::size_t bytes = 0;
  };

  shard& shard_for(const rocksdb::Slice& key);
  std::size_t shard_capacity() const noexcept;
  // Whether s holds key, intact, with exactly these bytes (then it becomes
  // the most recently used and nothing is written).
  bool keep_if_same(shard& s, const rocksdb::Slice& key, const std::string& bytes);
  // Whether e's bytes, copied to out, are what was stored. Holds s.mu.
  bool copy_out_locked(const entry& e, std::string* out);
  void remove_locked(shard& s, lru_list::iterator it);
  void evict_to_locked(shard& s, std::size_t limit);
  // Frees blocks found lost at the cold end (under budget=kernel/pressure
  // nothing else would free a block nobody asks for again).
  void sweep_cold_end_locked(shard& s);
  void shed_on_pressure();

  const secondary_cache_options options_;
  std::atomic<std::size_t> capacity_;
  droppable_resource res_;
  std::vector<std::unique_ptr<shard>> shards_;

  std::mutex pressure_mu_;  // guards monitor_ and next_poll_
  std::unique_ptr<pressure_monitor> monitor_;
  std::chrono::steady_clock::time_point next_poll_{};

  struct counters {
    std::atomic<std::uint64_t> inserts{0}, insert_rejects{0}, reinserts_kept{0}, lookups{0}, hits{0}, misses{0},
        drops_detected{0}, evictions{0}, erases{0}, bytes_inserted{0}, bytes_hit{0};
  };
  mutable counters c_;
};

}  // namespace dropalloc::rocks
