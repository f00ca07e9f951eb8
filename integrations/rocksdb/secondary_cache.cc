#include "integrations/rocksdb/secondary_cache.h"

#include <cstring>
#include <iostream>
#include <new>
#include <stdexcept>
#include <sstream>
#include <string_view>

#include "allocator/os/options.h"
#include "integrations/rocksdb/checksum.h"
#include "integrations/rocksdb/exit_report.h"

namespace dropalloc::rocks {

namespace {

// What a lookup hands back: the object create_cb made, ready at once.
class ready_handle final : public rocksdb::SecondaryCacheResultHandle {
 public:
  ready_handle(void* value, std::size_t size) : value_(value), size_(size) {}
  bool IsReady() override { return true; }
  void Wait() override {}
  void* Value() override { return value_; }
  std::size_t Size() override { return size_; }

 private:
  void* value_;
  std::size_t size_;
};

// Per-thread scratch: the serialised value on insert, the copied-out block on
// lookup. Reused so that a block costs no allocation of ordinary memory.
std::string& scratch() {
  thread_local std::string buf;
  return buf;
}

// Ordinary memory the kernel cannot drop: a scratch grown past this by one
// large block is given back after use, not kept for the thread's life.
constexpr std::size_t kScratchKept = 1 << 20;

struct scratch_trimmer {
  std::string& buf;
  ~scratch_trimmer() {
    if (buf.capacity() > kScratchKept) std::string().swap(buf);
  }
};

// The blocks sit in a resource of their own: many small blocks, freed on
// whichever thread RocksDB evicts from.
resource_options for_cache(resource_options r, const secondary_cache_options& o) {
  r.name = "rocksdb secondary cache";
  // Shedding trims what it freed at once (shed_on_pressure); blocks parked
  // in per-thread caches would escape the trim.
  if (o.budget == budget_mode::pressure) r.thread_cache = false;
  return r;
}

}  // namespace

secondary_cache::secondary_cache(const secondary_cache_options& options, const resource_options& resource)
    : options_(options), capacity_(options.capacity), res_(for_cache(resource, options)) {
  unsigned n = options_.shards == 0 ? 1 : options_.shards;
  shards_.reserve(n);
  for (unsigned i = 0; i < n; ++i) shards_.push_back(std::make_unique<shard>());
  if (options_.budget == budget_mode::pressure) monitor_ = std::make_unique<pressure_monitor>();
  exit_report::add(this);
}

secondary_cache::~secondary_cache() {
  if (exit_report::remove(this) && os::option_stats() != os::stats_level::off) print_stats(std::cerr);
  for (auto& s : shards_) {
    std::lock_guard lock(s->mu);
    while (!s->lru.empty()) remove_locked(*s, std::prev(s->lru.end()));
  }
}

rocksdb::Status secondary_cache::create(const std::string& uri, std::shared_ptr<rocksdb::SecondaryCache>* out) {
  secondary_cache_options o;
  std::string why = parse_uri(uri, &o);
  if (!why.empty()) return rocksdb::Status::InvalidArgument("dropalloc secondary cache", why);
  *out = std::make_shared<secondary_cache>(o);
  return rocksdb::Status::OK();
}

secondary_cache::shard& secondary_cache::shard_for(const rocksdb::Slice& key) {
  std::size_t h = std::hash<std::string_view>{}(std::string_view(key.data(), key.size()));
  return *shards_[h % shards_.size()];
}

std::size_t secondary_cache::shard_capacity() const noexcept {
  std::size_t c = capacity_.load(std::memory_order_relaxed);
  return c == 0 ? 0 : (c + shards_.size() - 1) / shards_.size();
}

rocksdb::Status secondary_cache::Insert(const rocksdb::Slice& key, void* value,
                                        const rocksdb::Cache::CacheItemHelper* helper) {
  if (helper == nullptr || helper->size_cb == nullptr || helper->saveto_cb == nullptr) {
    return rocksdb::Status::InvalidArgument("dropalloc secondary cache",
                                            "a CacheItemHelper without size/saveto callbacks");
  }
  std::string& buf = scratch();
  scratch_trimmer trim_after{buf};
  std::size_t n = helper->size_cb(value);
  // Out of ordinary memory anywhere below: the block is not stored, which is
  // always allowed, and nothing is left half-inserted.
  try {
    buf.resize(n);
  } catch (const std::bad_alloc&) {
    c_.insert_rejects.fetch_add(1, std::memory_order_relaxed);
    return rocksdb::Status::OK();
  } catch (const std::length_error&) {
    c_.insert_rejects.fetch_add(1, std::memory_order_relaxed);
    return rocksdb::Status::OK();
  }
  rocksdb::Status st = helper->saveto_cb(value, 0, n, buf.data());
  if (!st.ok()) {
    c_.insert_rejects.fetch_add(1, std::memory_order_relaxed);
    return st;
  }
  shard& s = shard_for(key);
  if (keep_if_same(s, key, buf)) {
    c_.reinserts_kept.fetch_add(1, std::memory_order_relaxed);
    return rocksdb::Status::OK();
  }
  entry e;
  e.size = n;
  try {
    e.key.assign(key.data(), key.size());
    e.block = res_.allocate_block(n == 0 ? 1 : n);
  } catch (const std::bad_alloc&) {
    // No address space or metadata left: not storing a block is always allowed.
    c_.insert_rejects.fetch_add(1, std::memory_order_relaxed);
    return rocksdb::Status::OK();
  }
  bool stored;
  if (options_.seal) {
    stored = res_.write_and_seal(e.block, buf.data(), n) == block_state::intact;
  } else {
    std::memcpy(e.block.ptr, buf.data(), n);
    e.checksum = checksum64(buf.data(), n);
    stored = true;
  }
  if (!stored) {
    // A page went while the block was being written: it is dropped, never
    // served. Counted as a rejected insert, not as a drop of a cached block.
    res_.deallocate(e.block);
    c_.insert_rejects.fetch_add(1, std::memory_order_relaxed);
    return rocksdb::Status::OK();
  }
  {
    std::lock_guard lock(s.mu);
    auto old = s.index.find(std::string_view(e.key));
    if (old != s.index.end()) remove_locked(s, old->second);
    try {
      s.lru.push_front(std::move(e));  // on failure e is unchanged and still owns its block
    } catch (const std::bad_alloc&) {
      res_.deallocate(e.block);
      c_.insert_rejects.fetch_add(1, std::memory_order_relaxed);
      return rocksdb::Status::OK();
    }
    try {
      s.index.emplace(std::string_view(s.lru.front().key), s.lru.begin());
    } catch (const std::bad_alloc&) {
      res_.deallocate(s.lru.front().block);
      s.lru.pop_front();
      c_.insert_rejects.fetch_add(1, std::memory_order_relaxed);
      return rocksdb::Status::OK();
    }
    s.bytes += n;
    if (std::size_t cap = shard_capacity(); cap != 0) evict_to_locked(s, cap);
    sweep_cold_end_locked(s);
  }
  c_.inserts.fetch_add(1, std::memory_order_relaxed);
  c_.bytes_inserted.fetch_add(n, std::memory_order_relaxed);
  if (monitor_) shed_on_pressure();
  return rocksdb::Status::OK();
}

bool secondary_cache::keep_if_same(shard& s, const rocksdb::Slice& key, const std::string& bytes) {
  // RocksDB offers a block again each time its primary cache evicts it, also
  // when we still hold it (a block's key names immutable contents). Comparing
  // costs a read; a rewrite costs an allocation, two copies and a madvise.
  std::lock_guard lock(s.mu);
  auto it = s.index.find(std::string_view(key.data(), key.size()));
  if (it == s.index.end()) return false;
  const entry& e = *it->second;
  if (e.size != bytes.size()) return false;
  bool same = options_.seal ? res_.is_intact(e.block) && std::memcmp(e.block.ptr, bytes.data(), e.size) == 0 &&
                                  res_.is_intact(e.block)
                            : e.checksum == checksum64(bytes.data(), bytes.size()) &&
                                  std::memcmp(e.block.ptr, bytes.data(), e.size) == 0;
  if (same) s.lru.splice(s.lru.begin(), s.lru, it->second);
  return same;
}

bool secondary_cache::copy_out_locked(const entry& e, std::string* out) {
  out->resize(e.size);
  if (!options_.seal) {
    std::memcpy(out->data(), e.block.ptr, e.size);
    return checksum64(out->data(), e.size) == e.checksum;
  }
  // The safe read protocol: intact before (skip the copy of a lost block),
  // copy, intact after (no page was lost while it was copied).
  if (!res_.is_intact(e.block)) return false;
  std::memcpy(out->data(), e.block.ptr, e.size);
  return res_.is_intact(e.block);
}

std::unique_ptr<rocksdb::SecondaryCacheResultHandle> secondary_cache::Lookup(
    const rocksdb::Slice& key, const rocksdb::Cache::CreateCallback& create_cb, bool /*wait*/, bool /*advise_erase*/,
    bool& is_in_sec_cache) {
  c_.lookups.fetch_add(1, std::memory_order_relaxed);
  is_in_sec_cache = false;
  std::string& buf = scratch();
  scratch_trimmer trim_after{buf};
  shard& s = shard_for(key);
  {
    std::lock_guard lock(s.mu);
    auto it = s.index.find(std::string_view(key.data(), key.size()));
    if (it == s.index.end()) {
      c_.misses.fetch_add(1, std::memory_order_relaxed);
      return nullptr;
    }
    bool whole;
    try {
      whole = copy_out_locked(*it->second, &buf);
    } catch (const std::bad_alloc&) {  // no ordinary memory for the copy: a miss
      c_.misses.fetch_add(1, std::memory_order_relaxed);
      return nullptr;
    }
    if (!whole) {
      remove_locked(s, it->second);
      c_.drops_detected.fetch_add(1, std::memory_order_relaxed);
      c_.misses.fetch_add(1, std::memory_order_relaxed);
      return nullptr;
    }
    // advise_erase (the primary cache keeps the block now) is not followed:
    // the block stays, so that when the primary evicts it again it is
    // already here (RocksDB 7.8 offers it again; keep_if_same makes that a
    // compare instead of a write). Droppable memory costs nobody anything.
    s.lru.splice(s.lru.begin(), s.lru, it->second);
    is_in_sec_cache = true;
  }
  // create_cb parses only bytes that were verified after they were copied.
  void* obj = nullptr;
  std::size_t charge = 0;
  rocksdb::Status st = create_cb(buf.data(), buf.size(), &obj, &charge);
  if (!st.ok() || obj == nullptr) {
    c_.misses.fetch_add(1, std::memory_order_relaxed);
    return nullptr;
  }
  c_.hits.fetch_add(1, std::memory_order_relaxed);
  c_.bytes_hit.fetch_add(buf.size(), std::memory_order_relaxed);
  return std::make_unique<ready_handle>(obj, charge);
}

void secondary_cache::Erase(const rocksdb::Slice& key) {
  shard& s = shard_for(key);
  std::lock_guard lock(s.mu);
  auto it = s.index.find(std::string_view(key.data(), key.size()));
  if (it == s.index.end()) return;
  remove_locked(s, it->second);
  c_.erases.fetch_add(1, std::memory_order_relaxed);
}

void secondary_cache::WaitAll(std::vector<rocksdb::SecondaryCacheResultHandle*> /*handles*/) {}

rocksdb::Status secondary_cache::SetCapacity(std::size_t capacity) {
  if (capacity == 0 && options_.budget == budget_mode::fixed) {
    return rocksdb::Status::InvalidArgument("dropalloc secondary cache: budget=fixed needs a capacity above 0");
  }
  capacity_.store(capacity, std::memory_order_relaxed);
  if (std::size_t cap = shard_capacity(); cap != 0) {
    for (auto& s : shards_) {
      std::lock_guard lock(s->mu);
      evict_to_locked(*s, cap);
    }
  }
  return rocksdb::Status::OK();
}

rocksdb::Status secondary_cache::GetCapacity(std::size_t& capacity) {
  capacity = capacity_.load(std::memory_order_relaxed);
  return rocksdb::Status::OK();
}

void secondary_cache::remove_locked(shard& s, lru_list::iterator it) {
  s.index.erase(std::string_view(it->key));
  s.bytes -= it->size;
  res_.deallocate(it->block);
  s.lru.erase(it);
}

void secondary_cache::evict_to_locked(shard& s, std::size_t limit) {
  while (s.bytes > limit && !s.lru.empty()) {
    remove_locked(s, std::prev(s.lru.end()));
    c_.evictions.fetch_add(1, std::memory_order_relaxed);
  }
}

void secondary_cache::sweep_cold_end_locked(shard& s) {
  // Under a cgroup limit the kernel drops sealed pages roughly least recently
  // used first, so lost blocks gather at our cold end. A few checks per insert
  // free them; the first intact one ends the sweep.
  std::string* buf = options_.seal ? nullptr : &scratch();
  for (int i = 0; i < 4 && !s.lru.empty(); ++i) {
    auto it = std::prev(s.lru.end());
    bool whole = options_.seal ? res_.is_intact(it->block) : copy_out_locked(*it, buf);
    if (whole) break;
    remove_locked(s, it);
    c_.drops_detected.fetch_add(1, std::memory_order_relaxed);
  }
}

void secondary_cache::shed_on_pressure() {
  std::unique_lock lock(pressure_mu_, std::try_to_lock);
  if (!lock.owns_lock()) return;  // another thread is polling right now
  auto now = std::chrono::steady_clock::now();
  if (now < next_poll_) return;
  next_poll_ = now + std::chrono::milliseconds(100);  // a cgroup read costs a few system calls
  pressure_reading r;
  if (!monitor_->read(&r)) return;
  shed_request want = monitor_->assess(r, pressure_thresholds{});
  if (want.bytes == 0 && want.fraction <= 0) return;
  std::size_t total = 0;
  for (auto& s : shards_) {
    std::lock_guard sl(s->mu);
    total += s->bytes;
  }
  if (total == 0) return;
  double keep = want.bytes != 0 ? 1.0 - static_cast<double>(want.bytes) / static_cast<double>(total)
                                : 1.0 - want.fraction;
  if (keep < 0) keep = 0;
  for (auto& s : shards_) {
    std::lock_guard sl(s->mu);
    evict_to_locked(*s, static_cast<std::size_t>(static_cast<double>(s->bytes) * keep));
  }
  // Freed blocks stay charged to the cgroup until their pages go back; hand
  // them back now, or usage would not move and the next poll shed again.
  res_.trim();
}

bool secondary_cache::drop_for_testing(const rocksdb::Slice& key) {
  shard& s = shard_for(key);
  std::lock_guard lock(s.mu);
  auto it = s.index.find(std::string_view(key.data(), key.size()));
  if (it == s.index.end()) return false;
  const entry& e = *it->second;
  return res_.drop_for_testing(e.block.ptr, res_.usable_size(e.block.ptr)) == 0;
}

secondary_cache_stats secondary_cache::stats() const {
  secondary_cache_stats st;
  st.inserts = c_.inserts.load(std::memory_order_relaxed);
  st.insert_rejects = c_.insert_rejects.load(std::memory_order_relaxed);
  st.reinserts_kept = c_.reinserts_kept.load(std::memory_order_relaxed);
  st.lookups = c_.lookups.load(std::memory_order_relaxed);
  st.hits = c_.hits.load(std::memory_order_relaxed);
  st.misses = c_.misses.load(std::memory_order_relaxed);
  st.drops_detected = c_.drops_detected.load(std::memory_order_relaxed);
  st.evictions = c_.evictions.load(std::memory_order_relaxed);
  st.erases = c_.erases.load(std::memory_order_relaxed);
  st.bytes_inserted = c_.bytes_inserted.load(std::memory_order_relaxed);
  st.bytes_hit = c_.bytes_hit.load(std::memory_order_relaxed);
  for (auto& s : shards_) {
    std::lock_guard lock(s->mu);
    st.entries += s->lru.size();
    st.bytes += s->bytes;
  }
  st.bytes_resident = res_.stats().bytes_resident;
  return st;
}

std::string secondary_cache::GetPrintableOptions() const {
  secondary_cache_stats st = stats();
  std::ostringstream o;
  o << "    uri: " << to_uri(options_) << "\n"
    << "    capacity: " << capacity_.load(std::memory_order_relaxed) << "\n"
    << "    memory: " << (res_.arena_backing() == backing::droppable ? "MAP_DROPPABLE" : "private fallback") << "\n"
    << "    inserts: " << st.inserts << "\n"
    << "    insert_rejects: " << st.insert_rejects << "\n"
    << "    reinserts_kept: " << st.reinserts_kept << "\n"
    << "    lookups: " << st.lookups << "\n"
    << "    hits: " << st.hits << "\n"
    << "    misses: " << st.misses << "\n"
    << "    drops_detected: " << st.drops_detected << "\n"
    << "    evictions: " << st.evictions << "\n"
    << "    erases: " << st.erases << "\n"
    << "    entries: " << st.entries << "\n"
    << "    bytes: " << st.bytes << "\n"
    << "    bytes_inserted: " << st.bytes_inserted << "\n"
    << "    bytes_hit: " << st.bytes_hit << "\n"
    << "    bytes_resident: " << st.bytes_resident << "\n";
  return o.str();
}

void secondary_cache::print_stats(std::ostream& out) const {
  out << "dropalloc RocksDB secondary cache (" << Name() << "):\n" << GetPrintableOptions();
}

}  // namespace dropalloc::rocks
