// The secondary cache through RocksDB's interface, with a CacheItemHelper of our
// own (a std::string per object): hits, misses, forced drops, erase,
// capacity, statistics, and creation from a URI through RocksDB's registry.
#include <doctest/doctest.h>

#include <rocksdb/convenience.h>
#include <rocksdb/secondary_cache.h>

#include <memory>
#include <string>

#include "integrations/rocksdb/secondary_cache.h"
#include "integrations/rocksdb/tests/string_item.h"

namespace {

using dropalloc::rocks::secondary_cache;
using dropalloc::rocks::secondary_cache_options;
using namespace dropalloc::rocks::testing;

void insert(secondary_cache& c, const std::string& key, std::size_t n) {
  std::string v = value_for(key, n);
  REQUIRE(c.Insert(key, &v, &kHelper).ok());
}

// The value served for key, or "" on a miss; checks it is the right one.
std::string lookup(secondary_cache& c, const std::string& key, bool* in_sec = nullptr, bool advise_erase = false) {
  bool is_in = true;
  auto h = c.Lookup(key, create_string(), true, advise_erase, is_in);
  if (in_sec) *in_sec = is_in;
  if (!h) {
    CHECK_FALSE(is_in);
    return "";
  }
  REQUIRE(h->IsReady());
  std::unique_ptr<std::string> got(static_cast<std::string*>(h->Value()));
  CHECK(h->Size() == got->size());
  CHECK(*got == value_for(key, got->size()));
  return *got;
}

secondary_cache_options opts(std::size_t capacity = 0, bool seal = true) {
  secondary_cache_options o;
  o.capacity = capacity;
  o.seal = seal;
  o.budget = capacity ? dropalloc::rocks::budget_mode::fixed : dropalloc::rocks::budget_mode::kernel;
  return o;
}

}  // namespace

TEST_CASE("a stored block is served back whole, an absent one is a miss") {
  for (bool seal : {true, false}) {
    secondary_cache c(opts(0, seal));
    insert(c, "a", 4000);
    insert(c, "b", 1);
    insert(c, "empty", 0);
    bool in_sec = false;
    CHECK(lookup(c, "a", &in_sec).size() == 4000);
    CHECK(in_sec);
    CHECK(lookup(c, "b").size() == 1);
    CHECK(lookup(c, "nothing", &in_sec).empty());
    CHECK_FALSE(in_sec);
    auto st = c.stats();
    CHECK(st.inserts == 3);
    CHECK(st.hits == 2);
    CHECK(st.misses == 1);
    CHECK(st.entries == 3);
    CHECK(st.bytes == 4001);
  }
}

TEST_CASE("a block whose pages were dropped is a miss, counted, and erased") {
  for (bool seal : {true, false}) {
    CAPTURE(seal);
    secondary_cache c(opts(0, seal));
    for (int i = 0; i < 50; ++i) insert(c, "k" + std::to_string(i), 3000 + i);
    REQUIRE(c.drop_for_testing("k7"));
    bool in_sec = true;
    CHECK(lookup(c, "k7", &in_sec).empty());
    CHECK_FALSE(in_sec);
    CHECK(c.stats().drops_detected >= 1);
    CHECK(lookup(c, "k7").empty());  // erased: a plain miss now
    // Neighbours sharing a dropped page are misses too; every hit is right.
    c.drop_all_for_testing();
    int hits = 0;
    for (int i = 0; i < 50; ++i) hits += !lookup(c, "k" + std::to_string(i)).empty();
    CHECK(hits == 0);
    insert(c, "k7", 3007);  // a fresh insert after a drop is served again
    CHECK(lookup(c, "k7").size() == 3007);
  }
}

TEST_CASE("a block offered again with the same bytes is kept, a lost one is written again") {
  for (bool seal : {true, false}) {
    CAPTURE(seal);
    secondary_cache c(opts(0, seal));
    insert(c, "x", 5000);
    insert(c, "x", 5000);
    CHECK(c.stats().reinserts_kept == 1);
    CHECK(c.stats().inserts == 1);
    REQUIRE(c.drop_for_testing("x"));
    insert(c, "x", 5000);
    CHECK(c.stats().reinserts_kept == 1);
    CHECK(c.stats().inserts == 2);
    CHECK(lookup(c, "x").size() == 5000);
  }
}

TEST_CASE("advise_erase is a hint it does not follow: the block stays and says so") {
  secondary_cache c(opts());
  CHECK_FALSE(c.SupportForceErase());
  insert(c, "x", 100);
  bool in_sec = false;
  CHECK(lookup(c, "x", &in_sec, true).size() == 100);
  CHECK(in_sec);
  CHECK(lookup(c, "x").size() == 100);
}

TEST_CASE("Erase, a re-insert and a failing create_cb") {
  secondary_cache c(opts());
  insert(c, "x", 100);
  insert(c, "x", 200);  // replaces
  CHECK(c.stats().entries == 1);
  CHECK(lookup(c, "x").size() == 200);
  bool in_sec = false;
  auto failing = [](const void*, std::size_t, void**, std::size_t*) { return rocksdb::Status::Corruption("no"); };
  CHECK(c.Lookup("x", failing, true, false, in_sec) == nullptr);
  CHECK(in_sec);  // still held: only the object could not be made
  c.Erase("x");
  c.Erase("never there");
  CHECK(lookup(c, "x").empty());
  CHECK(c.stats().erases == 1);
  CHECK(c.stats().entries == 0);
}

TEST_CASE("a fixed capacity evicts least recently used blocks; SetCapacity lowers it at once") {
  secondary_cache_options o = opts(64 * 1024);
  o.shards = 1;  // one LRU order over all keys
  secondary_cache c(o);
  for (int i = 0; i < 32; ++i) insert(c, "k" + std::to_string(i), 4096);
  auto st = c.stats();
  CHECK(st.bytes <= 64 * 1024);
  CHECK(st.evictions == 32 - 16);
  CHECK(lookup(c, "k0").empty());
  CHECK(lookup(c, "k31").size() == 4096);
  std::size_t cap = 0;
  CHECK(c.GetCapacity(cap).ok());
  CHECK(cap == 64 * 1024);
  CHECK(c.SetCapacity(8192).ok());
  CHECK(c.stats().bytes <= 8192);
  CHECK(lookup(c, "k31").size() == 4096);  // the most recently used stays
  CHECK(c.SetCapacity(0).IsInvalidArgument());  // budget=fixed needs one
}

TEST_CASE("statistics are printable through GetPrintableOptions") {
  secondary_cache c(opts());
  insert(c, "x", 10);
  lookup(c, "x");
  std::string p = c.GetPrintableOptions();
  CHECK(p.find("uri: dropalloc://capacity=0;seal=1;budget=kernel") != std::string::npos);
  CHECK(p.find("hits: 1\n") != std::string::npos);
  CHECK(p.find("inserts: 1\n") != std::string::npos);
  CHECK(std::string(c.Name()) == "DropallocSecondaryCache");
}

TEST_CASE("RocksDB's registry makes it from a URI, and refuses bad options with InvalidArgument") {
  rocksdb::ConfigOptions config;
  std::shared_ptr<rocksdb::SecondaryCache> sc;
  rocksdb::Status s = rocksdb::SecondaryCache::CreateFromString(config, "dropalloc://capacity=1M;seal=0", &sc);
  REQUIRE_MESSAGE(s.ok(), s.ToString());
  REQUIRE(sc != nullptr);
  CHECK(std::string(sc->Name()) == "DropallocSecondaryCache");
  std::size_t cap = 0;
  CHECK(sc->GetCapacity(cap).ok());
  CHECK(cap == 1 << 20);
  sc.reset();
  s = rocksdb::SecondaryCache::CreateFromString(config, "dropalloc://capacity=huge", &sc);
  CHECK_FALSE(s.ok());
  CHECK(sc == nullptr);
  // Our own entry point says precisely what was wrong.
  s = secondary_cache::create("dropalloc://capacity=huge", &sc);
  CHECK(s.IsInvalidArgument());
  CHECK(s.ToString().find("capacity=huge") != std::string::npos);
}
