// dropalloc::cache: a thread-safe cache whose values live in droppable memory.
//
// Keys, the index and the LRU lists are in ordinary memory; values (byte
// strings, or objects kept as flat bytes: see regenerable.h) are in droppable
// memory. An access copies the value out, checks it, and returns what the
// visitor computed from that private copy, building or rebuilding the value
// first when needed; concurrent accesses to a missing or lost value build it
// once. Visitors never touch droppable memory.
//
//   dropalloc::cache<std::string> blocks;                 // byte values
//   std::string page = blocks.get("k", [] { return decompress("k"); });
//
//   dropalloc::cache<int, std::pmr::vector<double>> rows;  // object values
//   double sum = rows.get_or_build(7,
//       [](std::pmr::memory_resource* mr) { return load_row(7, mr); },
//       [](const auto& v) { return std::accumulate(v.begin(), v.end(), 0.0); });
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <iterator>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

#include "allocator/cache/pressure.h"
#include "allocator/cache/regenerable.h"
#include "allocator/pmr/droppable_resource.h"

namespace dropalloc {

// Value type tag: the cache holds byte strings (builders return std::string).
struct bytes {};

// How costly a value is to rebuild. Under a budget, cheap values go first.
enum class rebuild_cost : std::uint8_t { cheap = 0, normal = 1, expensive = 2 };

struct cache_options {
  // Droppable bytes the values may hold (0: no budget). Beyond it, entries are
  // evicted least recently used first, cheap ones before normal before expensive.
  std::uint64_t byte_budget = 0;
  regenerable_options value;
  // Where values live; nullptr: the cache makes a resource of its own.
  droppable_resource* resource = nullptr;
};

struct cache_stats {
  std::uint64_t hits = 0;            // served without building
  std::uint64_t misses = 0;          // accesses that had to build
  std::uint64_t builds = 0;          // builder calls that completed
  std::uint64_t build_failures = 0;  // builder calls that threw
  std::uint64_t drops_detected = 0;  // values found lost (read, or built and lost before use)
  std::uint64_t rebuilds = 0;        // builds that replaced a lost value
  std::uint64_t evictions = 0;       // entries evicted to keep within the budget
  std::uint64_t entries = 0;
  std::uint64_t bytes_live = 0;      // droppable bytes the entries hold
  std::uint64_t bytes_resident = 0;  // of the cache's resource, resident now (mincore estimate)
  std::uint64_t build_ns = 0;        // time spent in builders
};

template <class Key, class Value = bytes, class Hash = std::hash<Key>, class Eq = std::equal_to<Key>>
class cache {
  static constexpr bool kBytes = std::is_same_v<Value, bytes>;
  using slot_type = std::conditional_t<kBytes, regenerable_bytes, regenerable<Value>>;
  using view_type = std::conditional_t<kBytes, std::string_view, const Value&>;

 public:
  explicit cache(const cache_options& options = {})
      : options_(options),
        own_(options.resource == nullptr ? std::make_unique<droppable_resource>() : nullptr),
        res_(options.resource != nullptr ? options.resource : own_.get()) {}
  ~cache() { clear(); }
  cache(const cache&) = delete;
  cache& operator=(const cache&) = delete;

  // Runs visit(value) on an intact value for key, building it with build()
  // (bytes: `std::string()`; objects: `Value(std::pmr::memory_resource*)`)
  // when absent or lost, and returns what visit returned.
  template <class Build, class Visit>
  auto get_or_build(const Key& key, Build&& build, Visit&& visit,
                    rebuild_cost cost = rebuild_cost::normal) {
    return access(key, cost, [&](slot_type& slot, access_outcome* o) { return slot.visit_with(build, visit, o); });
  }

  // Byte values: a copy of the intact bytes.
  template <class Build>
  std::string get(const Key& key, Build&& build, rebuild_cost cost = rebuild_cost::normal)
    requires kBytes
  {
    return access(key, cost, [&](slot_type& slot, access_outcome* o) { return slot.get(build, o); });
  }

  // Changes the rebuild cost hint of an entry; false if absent.
  bool set_cost(const Key& key, rebuild_cost cost) {
    std::lock_guard lock(mu_);
    auto it = index_.find(key);
    if (it == index_.end()) return false;
    move_to_front_locked(it->second.get(), cost);
    return true;
  }

  bool erase(const Key& key) {
    std::shared_ptr<entry> victim;
    {
      std::lock_guard lock(mu_);
      auto it = index_.find(key);
      if (it == index_.end()) return false;
      victim = it->second;
      unlink_locked(victim.get());
    }
    return true;  // the value goes back when the last visitor is done with it
  }

  void clear() {
    std::vector<std::shared_ptr<entry>> victims;
    {
      std::lock_guard lock(mu_);
      for (auto& [k, e] : index_) victims.push_back(e);
      for (auto& e : victims) unlink_locked(e.get());
    }
  }

  // Evicts least valuable entries until the values hold at most `bytes`
  // (what the budget does after each build). Returns the bytes evicted.
  std::uint64_t shed(std::uint64_t bytes) {
    std::vector<std::shared_ptr<entry>> victims;
    std::uint64_t freed;
    {
      std::lock_guard lock(mu_);
      freed = evict_locked(total_bytes_ > bytes ? total_bytes_ - bytes : 0, nullptr, &victims);
    }
    return freed;
  }

  // Evicts least valuable entries until at least `bytes` are freed or none is
  // left (what a headroom_keeper asks for). Returns the bytes evicted.
  std::uint64_t shed_at_least(std::uint64_t bytes) {
    std::vector<std::shared_ptr<entry>> victims;
    std::uint64_t freed;
    {
      std::lock_guard lock(mu_);
      freed = evict_locked(bytes, nullptr, &victims);
    }
    return freed;
  }

  // Droppable bytes the entries hold (cheaper than stats(), which asks the
  // resource what is resident).
  std::uint64_t bytes_live() const {
    std::lock_guard lock(mu_);
    return total_bytes_;
  }

  cache_stats stats() const {
    cache_stats s;
    s.hits = hits_.load(std::memory_order_relaxed);
    s.misses = misses_.load(std::memory_order_relaxed);
    s.builds = builds_.load(std::memory_order_relaxed);
    s.build_failures = build_failures_.load(std::memory_order_relaxed);
    s.drops_detected = drops_.load(std::memory_order_relaxed);
    s.rebuilds = rebuilds_.load(std::memory_order_relaxed);
    s.evictions = evictions_.load(std::memory_order_relaxed);
    s.build_ns = build_ns_.load(std::memory_order_relaxed);
    {
      std::lock_guard lock(mu_);
      s.entries = index_.size();
      s.bytes_live = total_bytes_;
    }
    s.bytes_resident = res_->stats().bytes_resident;
    return s;
  }

  droppable_resource& resource() const noexcept { return *res_; }
  std::uint64_t byte_budget() const {
    std::lock_guard lock(mu_);
    return options_.byte_budget;
  }
  // Changes the budget (0: none). Entries beyond it go at the next build, as
  // with a budget set at construction.
  void set_byte_budget(std::uint64_t bytes) {
    std::lock_guard lock(mu_);
    options_.byte_budget = bytes;
  }

  // A cap under memory pressure, apart from the owner's budget: the values
  // hold at most the least of the budget and every cap in force. Each capper
  // (a headroom_keeper) names its own cap by `who`; 0 bytes lifts it. So a
  // keeper never widens or removes the budget, nor another keeper's cap.
  void set_pressure_cap(const void* who, std::uint64_t bytes) {
    std::lock_guard lock(mu_);
    for (auto it = caps_.begin(); it != caps_.end(); ++it) {
      if (it->first != who) continue;
      if (bytes == 0) {
        caps_.erase(it);
      } else {
        it->second = bytes;
      }
      return;
    }
    if (bytes != 0) caps_.emplace_back(who, bytes);
  }
  // The least cap in force; 0: none.
  std::uint64_t pressure_cap() const {
    std::lock_guard lock(mu_);
    return least_cap_locked(0);
  }

 private:
  struct entry {
    entry(droppable_resource& r, const regenerable_options& o, const Key& k, rebuild_cost c)
        : key(k), slot(r, o), cost(c) {}
    const Key key;
    slot_type slot;
    // Guarded by the cache's mu_.
    rebuild_cost cost;
    typename std::list<entry*>::iterator lru;
    std::uint64_t bytes = 0;
    bool indexed = false;
  };

  template <class Run>
  auto access(const Key& key, rebuild_cost cost, Run&& run) {
    std::shared_ptr<entry> e = find_or_insert(key, cost);
    access_outcome o;
    try {
      if constexpr (std::is_void_v<decltype(run(e->slot, &o))>) {
        run(e->slot, &o);
        account(e, o);
      } else {
        auto r = run(e->slot, &o);
        account(e, o);
        return r;
      }
    } catch (...) {
      // account() counts the builder calls that threw (not a visitor that
      // threw) as failures, and such an access as a miss, never a hit.
      account(e, o);
      if (!e->slot.intact()) erase_entry(e);  // leave no half-built entry behind
      throw;
    }
  }

  std::shared_ptr<entry> find_or_insert(const Key& key, rebuild_cost cost) {
    std::lock_guard lock(mu_);
    auto it = index_.find(key);
    if (it != index_.end()) {
      move_to_front_locked(it->second.get(), cost);
      return it->second;
    }
    auto e = std::make_shared<entry>(*res_, options_.value, key, cost);
    index_.emplace(key, e);
    lru_[index_of(cost)].push_front(e.get());
    e->lru = lru_[index_of(cost)].begin();
    e->indexed = true;
    return e;
  }

  static std::size_t index_of(rebuild_cost c) { return static_cast<std::size_t>(c); }

  void move_to_front_locked(entry* e, rebuild_cost cost) {
    auto& from = lru_[index_of(e->cost)];
    auto& to = lru_[index_of(cost)];
    to.splice(to.begin(), from, e->lru);
    e->cost = cost;
  }

  void unlink_locked(entry* e) {
    lru_[index_of(e->cost)].erase(e->lru);
    total_bytes_ -= e->bytes;
    e->bytes = 0;
    e->indexed = false;
    index_.erase(e->key);  // callers hold another reference, so e->key outlives this
  }

  void erase_entry(const std::shared_ptr<entry>& e) {
    std::lock_guard lock(mu_);
    if (e->indexed) unlink_locked(e.get());
  }

  // Takes entries off the cold ends (cheap list first) until `want` bytes are
  // freed. Victims are handed out so that their memory goes back after the
  // lock is dropped.
  std::uint64_t evict_locked(std::uint64_t want, entry* keep, std::vector<std::shared_ptr<entry>>* out) {
    std::uint64_t freed = 0;
    for (auto& list : lru_) {
      // From the cold end; the entry just built is passed over, not a stop:
      // entries other threads used meanwhile sit in front of it.
      auto it = list.end();
      while (freed < want && it != list.begin()) {
        --it;
        entry* v = *it;
        if (v == keep) continue;
        auto next = std::next(it);  // stays valid when v's node goes
        freed += v->bytes;
        out->push_back(index_.find(v->key)->second);
        unlink_locked(v);
        evictions_.fetch_add(1, std::memory_order_relaxed);
        it = next;
      }
    }
    return freed;
  }

  void account(const std::shared_ptr<entry>& e, const access_outcome& o) {
    // A hit is an access served without calling a builder.
    (o.builds == 0 && o.build_failures == 0 ? hits_ : misses_).fetch_add(1, std::memory_order_relaxed);
    builds_.fetch_add(o.builds, std::memory_order_relaxed);
    build_failures_.fetch_add(o.build_failures, std::memory_order_relaxed);
    drops_.fetch_add(o.drops, std::memory_order_relaxed);
    rebuilds_.fetch_add(o.builds < o.drops ? o.builds : o.drops, std::memory_order_relaxed);
    build_ns_.fetch_add(o.build_ns, std::memory_order_relaxed);
    if (o.builds == 0) return;
    std::uint64_t now = e->slot.bytes();
    std::vector<std::shared_ptr<entry>> victims;  // released after the lock, below
    std::lock_guard lock(mu_);
    if (!e->indexed) return;
    total_bytes_ = total_bytes_ - e->bytes + now;
    e->bytes = now;
    std::uint64_t limit = limit_locked();
    if (limit != 0 && total_bytes_ > limit) evict_locked(total_bytes_ - limit, e.get(), &victims);
  }

  // The least of `start` and the pressure caps, 0 counting as none.
  std::uint64_t least_cap_locked(std::uint64_t start) const {
    std::uint64_t least = start;
    for (const auto& c : caps_) {
      if (least == 0 || c.second < least) least = c.second;
    }
    return least;
  }
  // The least of the owner's budget and the pressure caps; 0: none.
  std::uint64_t limit_locked() const { return least_cap_locked(options_.byte_budget); }

  cache_options options_;
  std::unique_ptr<droppable_resource> own_;
  droppable_resource* res_;

  // Declared after the resource: entries are destroyed (and their memory
  // handed back) before it.
  mutable std::mutex mu_;
  std::unordered_map<Key, std::shared_ptr<entry>, Hash, Eq> index_;
  std::list<entry*> lru_[3];  // by rebuild_cost; front = most recently used
  std::uint64_t total_bytes_ = 0;
  std::vector<std::pair<const void*, std::uint64_t>> caps_;  // set_pressure_cap(); usually 0 or 1

  std::atomic<std::uint64_t> hits_{0}, misses_{0}, builds_{0}, build_failures_{0}, drops_{0},
      rebuilds_{0}, evictions_{0}, build_ns_{0};
};

}  // namespace dropalloc
