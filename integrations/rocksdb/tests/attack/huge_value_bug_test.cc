// Insert serialises into a std::string sized by size_cb before anything else
// (secondary_cache.cc, Insert: buf.resize(n)). Only allocate_block's
// bad_alloc is caught ("not storing a block is always allowed"); the
// string's bad_alloc/length_error escapes Insert into RocksDB's eviction path,
// which does not expect exceptions.
#include <doctest/doctest.h>

#include <string>

#include "integrations/rocksdb/secondary_cache.h"

namespace {

std::size_t huge_size(void*) { return std::size_t{1} << 44; }  // 16 TiB
rocksdb::Status never_called(void*, std::size_t, std::size_t, void*) { return rocksdb::Status::OK(); }
void del(const rocksdb::Slice&, void*) {}
const rocksdb::Cache::CacheItemHelper kHuge(huge_size, never_called, del);

}  // namespace

TEST_CASE("a block too large to serialise is not stored; Insert does not throw") {
  dropalloc::rocks::secondary_cache_options o;
  dropalloc::rocks::secondary_cache c(o);
  int dummy = 0;
  rocksdb::Status st;
  CHECK_NOTHROW(st = c.Insert("huge", &dummy, &kHuge));  // fails: std::bad_alloc
  CHECK(c.stats().entries == 0);
}
