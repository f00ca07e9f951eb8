// The shadow model of one owner's blocks, written from the promise in the
// block state machine (what seal/check/seal_all/write_and_seal must answer),
// not from the allocator's code. It lives in ordinary memory and knows, for
// every block the owner holds:
//   * the bytes memory must hold now (owner writes and forced drops applied),
//   * the bytes the last effective seal vouched for,
//   * which pages lost sealed data since that seal, and whether the owner
//     wrote to them afterwards,
//   * which library state the block must be in (live, sealed, dropped).
// For each question it returns the SET of answers the promise allows: usually
// one; two only where the promise leaves a choice (documented at each spot).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "allocator/dropalloc.h"

namespace model {

using dropalloc::block_ref;
using dropalloc::block_state;

inline constexpr std::size_t kPage = 4096;

// A set of block_state values.
using answers = unsigned;
constexpr answers only(block_state s) { return 1u << static_cast<unsigned>(s); }
inline bool allows(answers a, block_state s) {
  return static_cast<unsigned>(s) < 8 && (a & only(s)) != 0;
}
std::string describe(answers a);
std::string name(block_state s);

enum class life : std::uint8_t { live, sealed, dropped };
const char* name(life l);

struct shadow_block {
  std::byte* ptr = nullptr;
  std::uint64_t gen = 0;
  std::size_t usable = 0;
  std::size_t requested = 0;
  std::size_t align = 0;
  std::vector<std::uint8_t> bytes;   // what memory must hold now
  std::vector<std::uint8_t> sealed;  // what the last effective seal vouched for
  life st = life::live;
  bool dirty = false;  // written since its seal: the owner owes a reseal
  // Per page the block touches: kWhole, kLost (sealed data there was dropped
  // and nobody wrote the page since: any check can see it, and the bytes the
  // seal vouched for are gone), kLostRewritten (dropped, then the owner wrote
  // into the page: the loss may be invisible). Kept while the block is
  // dropped too: only a rewrite of every lost page may revive it.
  std::vector<std::uint8_t> lost;
  std::uint64_t synced_epoch = 0;  // multi-threaded runs: seal_all epoch last seen
  int slot = -1;                   // multi-threaded runs: where it is published

  std::uintptr_t addr() const { return reinterpret_cast<std::uintptr_t>(ptr); }
  std::uintptr_t first_page() const { return addr() / kPage * kPage; }
  std::size_t pages() const { return (addr() + usable - 1) / kPage - addr() / kPage + 1; }
  bool any_lost(std::uint8_t kind) const;
};

inline constexpr std::uint8_t kWhole = 0, kLost = 1, kLostRewritten = 2;

// Every generation handed out per address, shared by all owners of a resource:
// the promise is that one address never sees a generation twice.
class generation_registry {
 public:
  // False if (addr, gen) was handed out before.
  bool record(std::uintptr_t addr, std::uint64_t gen);
  void clear();

 private:
  std::mutex lock_;
  std::unordered_map<std::uintptr_t, std::unordered_set<std::uint64_t>> seen_;
};

class shadow {
 public:
  std::vector<std::unique_ptr<shadow_block>> live;
  std::vector<block_ref> freed;  // handles freed by this owner (bounded)

  // A block just handed out; its bytes are whatever memory holds now.
  shadow_block* add(block_ref ref, std::size_t usable, std::size_t requested, std::size_t align);
  void remove(shadow_block* b);  // freed: its handle joins `freed`

  // The owner wrote [off, off + n) of b.
  void write(shadow_block* b, std::size_t off, const std::uint8_t* src, std::size_t n);
  // The page at `page` was zeroed (forced drop): every block on it loses it.
  void drop_page(std::uintptr_t page);

  answers expect_check(const shadow_block& b) const;
  // Only for these blocks is an `intact` answer comparable byte for byte with
  // `sealed` (a dirty block's owner has not resealed what it wrote).
  static bool intact_means_sealed_bytes(const shadow_block& b) {
    return b.st == life::sealed && !b.dirty;
  }
  void saw_check(shadow_block* b, block_state got);

  answers expect_seal(const shadow_block& b) const;
  void saw_seal(shadow_block* b, block_state got);
  // write_and_seal(p, src, n), asked BEFORE write() applies the copy.
  answers expect_write_and_seal(const shadow_block& b, std::size_t n) const;

  // seal_all(): seals exactly the live blocks with what they hold; returns how many.
  std::size_t seal_all();
  void seal_live_now(shadow_block* b);  // one live block sealed by someone's seal_all

  // What a forked child must see, where droppable arenas read as zeros.
  answers expect_check_in_child(const shadow_block& b, bool droppable) const;

  shadow_block* at(std::uintptr_t addr);                 // live block starting at addr
  shadow_block* containing(std::uintptr_t addr);         // live block holding addr
  bool overlaps(std::uintptr_t addr, std::size_t n);     // any live block in [addr, addr+n)
  std::size_t live_bytes() const;

 private:
  void index(shadow_block* b) { by_addr_[b->addr()] = b; }
  std::map<std::uintptr_t, shadow_block*> by_addr_;
  std::size_t freed_next_ = 0;
};

}  // namespace model
