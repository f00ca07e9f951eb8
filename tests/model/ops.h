// Random operations on one resource, each checked against the shadow model.
// A runner is one owner: in single-threaded runs it owns every block of the
// resource (so counts from seal_all/check_all/stats are exact); in
// multi-threaded runs several runners share a resource, each owning its own
// blocks, and publish their handles for checker threads.
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <vector>

#include "tests/failure_log.h"
#include "tests/model/model.h"
#include "tests/rng.h"

namespace model {

using rng = dropalloc::testing::rng;  // the same sequence everywhere
using failure_log = dropalloc::testing::failure_log;

// Shared by the threads of one multi-threaded run.
struct mt_context {
  // The seal_all contract: nobody writes an unsealed block while seal_all
  // runs. Owners hold it shared for every operation on an existing block
  // (writes, drops, seals, checks); the sweeper holds it alone for seal_all.
  // Allocation and free do not take it: they may race seal_all.
  std::shared_mutex seal_lock;
  std::atomic<std::uint64_t> epoch{0};  // seal_all calls begun, bumped under the exclusive lock
  std::atomic<bool> sweeper_waiting{false};  // owners hold back so the sweeper gets the lock
  // Plain writes into blocks must not overlap the library's atomic reads of
  // the same words (check, check_all) in other threads: a data race in C++
  // terms. Writers hold it shared; threads that check others' blocks hold it
  // alone. Frees, allocations, trims, seals and drops still race the checks.
  std::shared_mutex write_lock;
  struct slot {
    std::mutex m;
    block_ref ref;
    bool freed = true;  // set after deallocate returned: from then on check must say stale
  };
  std::vector<slot> board;
  explicit mt_context(std::size_t slots) : board(slots) {}
};

struct runner_options {
  int thread_id = 0;
  mt_context* mt = nullptr;  // null: single-threaded, this runner owns the whole resource
  int first_slot = 0;        // multi-threaded: board slots [first_slot, first_slot + slots)
  int slots = 0;
  std::size_t max_live = 160;
  std::size_t max_live_bytes = std::size_t{24} << 20;
  bool fork_allowed = true;
  // Diagnosis: keep running after an oracle fired (the model then follows the
  // library's answer where it can), to see which other oracles fire too.
  bool keep_going = false;
};

class runner {
 public:
  runner(dropalloc::droppable_resource& res, generation_registry& gens, failure_log& log,
         std::uint64_t seed, runner_options opt);

  void step();  // one random operation
  void free_all();
  bool failed() const { return failed_; }
  std::uint64_t ops() const { return op_no_; }
  std::uint64_t seed() const { return seed_; }

 private:
  bool single() const { return opt_.mt == nullptr; }
  shadow_block* pick();
  std::size_t pick_size();
  void fill(std::vector<std::uint8_t>& v);
  bool droppable_page(const shadow_block& b, std::uintptr_t page) const;
  std::uintptr_t pick_page(const shadow_block& b);
  void force_drop(std::uintptr_t page);
  void sync(shadow_block* b);
  std::shared_lock<std::shared_mutex> owner_lock();  // empty in single-threaded runs  // applies seal_all runs the owner has not seen yet

  void op_allocate();
  void op_write(shadow_block* b);
  void op_seal(shadow_block* b);
  void op_seal_many(shadow_block* b);
  // What op_seal and op_seal_many expect of a seal, taken before it.
  struct seal_before {
    answers want;
    bool resealing;
    std::uint64_t gen;
  };
  seal_before before_seal(shadow_block* b);
  void after_seal(shadow_block* b, const seal_before& before, block_state got, const char* call);
  void op_rewrite_dropped(shadow_block* b);
  void op_write_and_seal(shadow_block* b);
  void op_drop(shadow_block* b);
  void op_check(shadow_block* b);
  void op_free(shadow_block* b);
  void op_seal_all();
  void op_check_all();
  void op_double_free();
  void op_stale_probe();
  void op_foreign_probe();
  void op_free_all_and_trim();
  void op_fork();

  void expect(bool ok, const char* oracle, const std::string& detail);
  void compare_memory(const shadow_block& b, const char* oracle);
  void note(const std::string& what);
  std::string where(const shadow_block& b) const;
  void publish(shadow_block* b);
  void unpublish(shadow_block* b);
  void refresh_generation(shadow_block* b);

  dropalloc::droppable_resource& res_;
  generation_registry& gens_;
  failure_log& log_;
  std::uint64_t seed_;
  runner_options opt_;
  rng r_;
  shadow m_;
  std::uint64_t op_no_ = 0;
  bool failed_ = false;
  bool droppable_ = true;  // arenas read as zeros in a forked child (droppable or the wiped fallback)
  std::deque<std::string> recent_;  // the last operations, for failure reports
};

}  // namespace model
