#include "tests/cgroup_truth/workload.h"

#include <atomic>
#include <barrier>
#include <cstdio>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#include "allocator/dropalloc.h"
#include "tests/cgroup_truth/content.h"
#include "tests/cgroup_truth/oracle.h"

namespace dropalloc::truth {
namespace {

// Wrong blocks are printed as found, the first few in full: with a broken
// core there can be hundreds of thousands.
std::atomic<int> wrong_printed{0};
constexpr int kWrongPrinted = 20;

struct slot {
  void* ptr = nullptr;
  std::uint64_t generation = 0;
  std::uint64_t seed = 0;
  std::uint64_t sum = 0;  // checksum of what was written: the truth
  std::uint32_t size = 0;
  bool pending = false;        // written, waiting for the next seal_all()
  bool known_dropped = false;  // a check said dropped: must be rewritten before any reseal
};

// One thread's blocks. Slot i always uses seal path i % kPaths. Blocks of the
// seal_all() path live in a resource of their own, because seal_all() seals
// every live block of its resource and no other thread may be writing one.
class worker {
 public:
  worker(int id, const workload_options& o, droppable_resource& shared)
      : id_(id), o_(o), shared_(shared), slots_(o.slots_per_thread), scratch_(kMaxBlock), rng_{mix(id + 77)} {}

  void write_phase() {
    std::size_t written = 0;
    while (written < o_.steps_per_round) {
      std::size_t i = rng_.below(slots_.size());
      if (!slots_[i].pending) {
        write_fresh(i);
        ++written;
      }
      look_again(rng_.below(slots_.size()));
    }
    flush_batch();
  }

  // Reads another thread's blocks while that thread waits at the barrier.
  void check_other(worker& other) {
    for (std::size_t k = 0; k < o_.cross_checks; ++k) {
      std::size_t i = rng_.below(other.slots_.size());
      slot& s = other.slots_[i];
      if (s.ptr == nullptr) continue;
      int path = path_of(i);
      droppable_resource& res = other.res_of(path);
      verdict v = judge(res, s.ptr, s.generation, s.size, s.sum, res.check(s.ptr, s.generation));
      ++t_.n[path][other_thread][v];
      if (v == dropped) s.known_dropped = true;  // its owner must not reseal it unwritten
      if (v == wrong) report(path, other_thread, s);
    }
  }

  tally result() {
    t_.drops_detected += batch_.stats().drops_detected;
    return t_;
  }

 private:
  static int path_of(std::size_t i) { return static_cast<int>(i % kPaths); }
  droppable_resource& res_of(int path) { return path == batch_seal_all ? batch_ : shared_; }

  void write_fresh(std::size_t i) {
    slot& s = slots_[i];
    int path = path_of(i);
    if (s.ptr != nullptr) release(i);
    s.seed = mix((static_cast<std::uint64_t>(id_) << 56) ^ ++written_);
    s.size = static_cast<std::uint32_t>(pick_size(rng_.next()));
    block_ref b = res_of(path).allocate_block(s.size);
    s.ptr = b.ptr;
    s.generation = b.generation;
    ++t_.blocks[path];
    write_and_seal_slot(i, after_seal);
  }

  // Writes the slot's contents and seals them the way its path does.
  void write_and_seal_slot(std::size_t i, moment when) {
    slot& s = slots_[i];
    int path = path_of(i);
    droppable_resource& res = res_of(path);
    fill(s.seed, s.size, scratch_.data());
    s.sum = checksum(scratch_.data(), s.size);
    t_.bytes += s.size;
    if (path == write_and_seal) {
      block_state got = res.write_and_seal(s.ptr, scratch_.data(), s.size);
      s.generation = res.generation(s.ptr);  // a revival starts a new life
      settle(i, when, got, true);
      return;
    }
    std::memcpy(s.ptr, scratch_.data(), s.size);
    if (path == batch_seal_all && when == after_seal) {
      s.pending = true;
      pending_.push_back(i);
      if (pending_.size() >= o_.seal_all_batch) flush_batch();
      return;
    }
    // A fresh block is sealed by seal(). A dropped one, rewritten whole just
    // now, by seal_rewritten(): seal() and seal_all() leave dropped blocks
    // dropped.
    block_state got = when == after_seal ? res.seal(s.ptr) : res.seal_rewritten(s.ptr);
    s.generation = res.generation(s.ptr);  // a revival starts a new life
    settle(i, when, got, true);
  }

  void flush_batch() {
    if (pending_.empty()) return;
    batch_.seal_all();
    for (std::size_t i : pending_) {
      slot& s = slots_[i];
      if (!s.pending) continue;  // freed meanwhile
      s.pending = false;
      settle(i, after_seal, batch_.check(s.ptr, s.generation), true);
    }
    pending_.clear();
    // Older blocks of the resource: seal_all() must not vouch for them anew.
    for (int k = 0; k < 16; ++k) {
      std::size_t i = rng_.below(slots_.size() / kPaths) * kPaths + batch_seal_all;
      slot& s = slots_[i];
      if (s.ptr != nullptr) settle(i, after_seal_all, batch_.check(s.ptr, s.generation), false);
    }
  }

  void look_again(std::size_t i) {
    slot& s = slots_[i];
    if (s.ptr == nullptr) return;
    droppable_resource& res = res_of(path_of(i));
    if (s.pending) {  // live and unsealed: check() must not call it intact unless it is
      settle(i, revisit, res.check(s.ptr, s.generation), false);
      return;
    }
    // Resealing a block nobody wrote since its seal: if a page went meanwhile,
    // the reseal must not turn the zeros into an intact block.
    bool reseal = !s.known_dropped && rng_.below(4) == 0;
    if (reseal) {
      // Through the handle: a re-seal gives the block a new generation.
      block_ref h{s.ptr, s.generation};
      block_state got = res.seal(h);
      s.generation = h.generation;
      settle(i, after_reseal, got, false);
    } else {
      settle(i, revisit, res.check(s.ptr, s.generation), false);
    }
    if (s.ptr != nullptr && s.known_dropped) {
      if (rng_.below(2) == 0) {
        s.known_dropped = false;
        write_and_seal_slot(i, after_rewrite);
      } else {
        release(i);
      }
    }
  }

  // Judges what the block holds after `first`. fresh: the first seal since
  // the block was written, where seal()/seal_all() may have sealed zeros.
  void settle(std::size_t i, moment when, block_state first, bool fresh) {
    slot& s = slots_[i];
    int path = path_of(i);
    verdict v = judge(res_of(path), s.ptr, s.generation, s.size, s.sum, first);
    if (v == wrong) {
      mismatch m = compare(s.ptr, s.size, s.seed, scratch_.data());
      if (fresh && path != write_and_seal && m.differing_bytes > 0 && m.only_zeros_differ) {
        ++t_.lost_before_seal[path];
      } else {
        ++t_.n[path][when][wrong];
        print_if_few(path, when, s, m);
      }
      release(i);  // its sealed contents are not what we wrote: nothing to keep
      return;
    }
    ++t_.n[path][when][v];
    if (v == dropped) s.known_dropped = true;
  }

  void report(int path, moment when, const slot& s) {
    print_if_few(path, when, s, compare(s.ptr, s.size, s.seed, scratch_.data()));
  }

  static void print_if_few(int path, moment when, const slot& s, const mismatch& m) {
    if (wrong_printed.fetch_add(1, std::memory_order_relaxed) < kWrongPrinted) {
      print_wrong(stdout, path, when, s.ptr, s.size, s.seed, m);
    }
  }

  void release(std::size_t i) {
    slot& s = slots_[i];
    res_of(path_of(i)).deallocate(s.ptr, s.size);
    s = slot{};
  }

  int id_;
  const workload_options& o_;
  droppable_resource& shared_;
  droppable_resource batch_;
  std::vector<slot> slots_;
  std::vector<std::size_t> pending_;
  std::vector<unsigned char> scratch_;
  rng rng_;
  std::uint64_t written_ = 0;
  tally t_;
};

}  // namespace

tally run_workload(const workload_options& o) {
  droppable_resource shared;
  std::vector<std::unique_ptr<worker>> workers;
  for (int id = 0; id < o.threads; ++id) workers.push_back(std::make_unique<worker>(id, o, shared));
  std::uint64_t per_round = o.steps_per_round * static_cast<std::uint64_t>(o.threads);
  std::uint64_t rounds = (o.blocks + per_round - 1) / per_round;
  // Rounds alternate: every thread writes its own blocks, then every thread
  // checks the next thread's blocks while nobody writes.
  std::barrier sync(o.threads);
  std::vector<std::thread> threads;
  for (int id = 0; id < o.threads; ++id) {
    threads.emplace_back([&, id] {
      worker& self = *workers[static_cast<std::size_t>(id)];
      worker& next = *workers[static_cast<std::size_t>((id + 1) % o.threads)];
      for (std::uint64_t r = 0; r < rounds; ++r) {
        self.write_phase();
        sync.arrive_and_wait();
        self.check_other(next);
        sync.arrive_and_wait();
      }
    });
  }
  for (auto& t : threads) t.join();
  tally total;
  for (auto& w : workers) total.add(w->result());
  total.drops_detected += shared.stats().drops_detected;
  return total;
}

}  // namespace dropalloc::truth
