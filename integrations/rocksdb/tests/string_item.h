// An item type for tests of the secondary cache without a DB: the object
// RocksDB's primary cache would hold is a std::string, saved as its bytes.
#pragma once

#include <rocksdb/cache.h>

#include <cstdint>
#include <functional>
#include <string>

namespace dropalloc::rocks::testing {

// The object RocksDB would hold in its primary cache: here a std::string.
inline std::size_t size_of(void* obj) { return static_cast<std::string*>(obj)->size(); }
inline rocksdb::Status save_to(void* obj, std::size_t offset, std::size_t length, void* out) {
  auto* s = static_cast<std::string*>(obj);
  if (offset + length > s->size()) return rocksdb::Status::Corruption("saveto past the end");
  s->copy(static_cast<char*>(out), length, offset);
  return rocksdb::Status::OK();
}
inline void delete_object(const rocksdb::Slice&, void* obj) { delete static_cast<std::string*>(obj); }
inline const rocksdb::Cache::CacheItemHelper kHelper(size_of, save_to, delete_object);

inline rocksdb::Cache::CreateCallback create_string() {
  return [](const void* buf, std::size_t size, void** out, std::size_t* charge) {
    *out = new std::string(static_cast<const char*>(buf), size);
    *charge = size;
    return rocksdb::Status::OK();
  };
}

// A value derived from its key, so that any wrong byte is seen.
inline std::string value_for(const std::string& key, std::size_t n) {
  std::string v(n, '\0');
  std::uint64_t x = std::hash<std::string>{}(key) | 1;
  for (auto& c : v) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    c = static_cast<char>(x);
  }
  return v;
}

}  // namespace dropalloc::rocks::testing
