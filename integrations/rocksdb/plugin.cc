// librocksdb_dropalloc.so: registers the dropalloc secondary cache with
// RocksDB's object registry when the library is loaded, so that a program
// that builds its secondary cache from a string finds it:
//   LD_PRELOAD=.../librocksdb_dropalloc.so db_bench
//       --secondary_cache_uri='dropalloc://capacity=256M' ...  (one line)
// The whole URI reaches the factory (RocksDB passes a string without an
// "id=" unchanged as the id), which parses it (uri_options.h).
#include <memory>
#include <string>

#include <rocksdb/secondary_cache.h>
#include <rocksdb/utilities/object_registry.h>

#include "integrations/rocksdb/secondary_cache.h"

namespace {

rocksdb::SecondaryCache* make(const std::string& uri, std::unique_ptr<rocksdb::SecondaryCache>* guard,
                              std::string* errmsg) {
  dropalloc::rocks::secondary_cache_options o;
  std::string why = dropalloc::rocks::parse_uri(uri, &o);
  if (!why.empty()) {
    *errmsg = "dropalloc secondary cache: " + why;
    return nullptr;
  }
  guard->reset(new dropalloc::rocks::secondary_cache(o));
  return guard->get();
}

// Runs when the library is loaded (after librocksdb, which it depends on).
[[maybe_unused]] const bool registered = [] {
  rocksdb::ObjectLibrary::Default()->AddFactory<rocksdb::SecondaryCache>(
      rocksdb::ObjectLibrary::PatternEntry("dropalloc", false).AddSeparator("://", false), make);
  return true;
}();

}  // namespace
