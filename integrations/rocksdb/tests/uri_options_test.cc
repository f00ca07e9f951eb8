// The URI parser: defaults, every option, and a clear message for bad input.
#include <doctest/doctest.h>

#include "integrations/rocksdb/uri_options.h"

using dropalloc::rocks::budget_mode;
using dropalloc::rocks::parse_uri;
using dropalloc::rocks::secondary_cache_options;

TEST_CASE("an empty URI gives the defaults: no fixed capacity, sealed") {
  secondary_cache_options o;
  o.seal = false;
  CHECK(parse_uri("dropalloc://", &o) == "");
  CHECK(o.capacity == 0);
  CHECK(o.seal);
  CHECK(o.budget == budget_mode::kernel);
  CHECK(o.shards == 16);
}

TEST_CASE("every option is read") {
  secondary_cache_options o;
  REQUIRE(parse_uri("dropalloc://capacity=256M;seal=0;shards=4;", &o) == "");
  CHECK(o.capacity == 256u << 20);
  CHECK_FALSE(o.seal);
  CHECK(o.budget == budget_mode::fixed);  // a capacity alone means a fixed budget
  CHECK(o.shards == 4);
  REQUIRE(parse_uri("dropalloc://budget=pressure;capacity=1G", &o) == "");
  CHECK(o.budget == budget_mode::pressure);
  CHECK(o.capacity == std::size_t{1} << 30);
  REQUIRE(parse_uri("dropalloc://budget=pressure", &o) == "");
  CHECK(o.capacity == 0);
}

TEST_CASE("to_uri reads back to the same options") {
  secondary_cache_options o, back;
  o.capacity = 12345;
  o.seal = false;
  o.budget = budget_mode::pressure;
  o.shards = 3;
  REQUIRE(parse_uri(to_uri(o), &back) == "");
  CHECK(back.capacity == 12345);
  CHECK_FALSE(back.seal);
  CHECK(back.budget == budget_mode::pressure);
  CHECK(back.shards == 3);
}

TEST_CASE("bad input is refused with a message that names it") {
  secondary_cache_options o;
  auto refused = [&](const char* uri, const char* part) {
    std::string why = parse_uri(uri, &o);
    CHECK_MESSAGE(why.find(part) != std::string::npos, uri << " -> '" << why << "'");
  };
  refused("lru://capacity=1M", "does not start with dropalloc://");
  refused("dropalloc://capacity=lots", "capacity=lots");
  refused("dropalloc://capacity=", "capacity=");
  refused("dropalloc://seal=maybe", "seal=maybe");
  refused("dropalloc://budget=fixed", "budget=fixed needs capacity");
  refused("dropalloc://budget=kernel;capacity=1M", "budget=kernel means no fixed capacity");
  refused("dropalloc://budget=lru", "budget=lru");
  refused("dropalloc://shards=0", "shards=0");
  refused("dropalloc://colour=blue", "unknown option 'colour'");
  refused("dropalloc://capacity", "expected name=value");
}
