// The options of the dropalloc secondary cache and the parser of the URIs
// that name it: "dropalloc://capacity=256M;seal=1;budget=fixed;shards=16".
// Kept apart from the cache so that it is tested without RocksDB running.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace dropalloc::rocks {

// Who bounds the memory the cached blocks take.
enum class budget_mode : std::uint8_t {
  fixed,     // at most `capacity` bytes, least recently used blocks evicted
  kernel,    // no fixed bound: the kernel drops pages when memory is needed
  pressure,  // as kernel, and the cache also sheds blocks itself when its
             // memory cgroup passes 90% of its limit (down to 80%)
};
const char* to_string(budget_mode m) noexcept;

struct secondary_cache_options {
  // Bytes of blocks held (0: no fixed capacity). budget=fixed needs it.
  std::size_t capacity = 0;
  // true: blocks are written with write_and_seal (verified, then MADV_FREE, so
  // under a cgroup limit the kernel drops the oldest first) and a lookup
  // trusts the seal. false: blocks are plain copies in droppable memory with
  // a checksum kept in ordinary memory; a lookup trusts the checksum. Unsealed
  // droppable pages are dropped nearly all at once under a limit, so this is
  // for comparison.
  bool seal = true;
  budget_mode budget = budget_mode::kernel;
  // Independent parts, each with its own lock, index and LRU list.
  unsigned shards = 16;
};

// Parses "dropalloc://" followed by name=value pairs separated by ';'. An
// empty string after the scheme gives the defaults. Returns "" on success,
// otherwise a message naming what was wrong (and *out is unspecified).
// capacity takes bytes with an optional k/M/G suffix (powers of 1024); a
// capacity without a budget means budget=fixed; budget=fixed without a
// capacity and budget=kernel with one are errors (pressure takes either).
std::string parse_uri(const std::string& uri, secondary_cache_options* out);

// The options as a URI that parse_uri reads back to the same options.
std::string to_uri(const secondary_cache_options& o);

}  // namespace dropalloc::rocks
