// seal_all() makes one translation barrier at its start and then seals every
// live block it finds without another (4334f30): "the caller wrote them
// before this call". A block can become live with new contents after that
// barrier without anyone breaking seal_all's precondition (no thread is still
// writing an *unsealed* block): another thread's write_and_seal() of a
// *sealed* block, or its seal() after a write to a sealed block, whose own
// barrier fails, leaves the block live (unsealed) at a new generation with
// contents written after seal_all's barrier. seal_all() then publishes a seal
// of those contents with no barrier between their last write and the seal:
// exactly what every other seal refuses (os/os.h, "stale translations";
// seal_block: "no barrier, no seal").
//
// Deterministic: the other thread's call runs inside seal_all's barrier hook
// (after the barrier's hook point, before seal_all takes any lock). The test
// counts successful barriers after the last write of the block's contents.
#include <doctest/doctest.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "allocator/dropalloc.h"
#include "allocator/os/fake_os.h"
#include "tests/attack15/common.h"
#include "tests/fake_resource.h"

using dropalloc::block_ref;
using dropalloc::block_state;
using dropalloc::droppable_resource;

using attack15::fill;
using attack15::name;

namespace {

struct world;

struct world {
  dropalloc::os::fake_os os;
  droppable_resource res;
  // The other thread's action, run once at seal_all's barrier.
  enum class act { none, write_and_seal, write_then_seal } pending = act::none;
  block_ref x;
  std::size_t size = 0;
  std::vector<unsigned char> src;
  block_state other_result = block_state::foreign;
  bool in_hook = false;
  // Barriers that returned 0 after the last write of x's contents.
  int good_barriers_after_write = 0;
  bool written = false;

  explicit world(dropalloc::backing b) : res(dropalloc::testing::on_fake_os(os, b)) {
    os.on_settle = &hook;
    os.on_settle_ctx = this;
  }
  static void hook(void* ctx) {
    auto* w = static_cast<world*>(ctx);
    if (w->in_hook) return;
    // The barrier this hook belongs to succeeds iff settle_error is 0 when
    // the hook returns (fake_os checks it after calling us).
    const act a = w->pending;
    w->pending = act::none;
    if (a == act::none && w->written && w->os.settle_error == 0) ++w->good_barriers_after_write;
    if (a != act::none) {
      w->in_hook = true;
      // Another thread, so that its seal takes its own read section and
      // thread cache as a real concurrent caller would.
      std::thread other([w, a] {
        w->os.settle_error = ENOMEM;  // its barrier fails
        if (a == act::write_and_seal) {
          w->other_result = w->res.write_and_seal(w->x, w->src.data(), w->size);
        } else {
          std::memcpy(w->x.ptr, w->src.data(), w->size);  // write a sealed block ...
          w->other_result = w->res.seal(w->x);             // ... and re-seal it
        }
        w->written = true;
        w->good_barriers_after_write = 0;
        w->os.settle_error = 0;
      });
      other.join();
      w->in_hook = false;
      return;  // seal_all's barrier now succeeds, but it came before the write
    }
  }
};

constexpr std::size_t kSizes[] = {64, 6000, 16 * 1024, 256 * 1024};
constexpr dropalloc::backing kBackings[] = {dropalloc::backing::droppable, dropalloc::backing::private_fallback};

}  // namespace

TEST_CASE("bug: seal_all publishes contents written after its only barrier, by a refused concurrent seal") {
  for (auto backing : kBackings) {
    for (auto a : {world::act::write_and_seal, world::act::write_then_seal}) {
      for (std::size_t size : kSizes) {
        CAPTURE(static_cast<int>(backing));
        CAPTURE(static_cast<int>(a));
        CAPTURE(size);
        world w(backing);
        w.size = size;
        w.src.resize(size);
        w.x = w.res.allocate_block(size);
        fill(w.x.ptr, size, 1);
        REQUIRE(w.res.seal(w.x) == block_state::intact);
        fill(w.src.data(), size, 2);
        w.pending = a;
        const std::size_t sealed = w.res.seal_all();
        REQUIRE(w.written);
        CHECK(w.other_result == block_state::dropped);  // its seal was refused: taken as lost
        const std::uint64_t gen = w.res.generation(w.x.ptr);
        const block_state st = w.res.check(w.x.ptr, gen);
        MESSAGE("size ", size, ": seal_all sealed ", sealed, ", block now ", name(st),
                ", successful barriers between its last write and that seal: ", w.good_barriers_after_write);
        // No seal may be published unless a barrier succeeded after the last
        // write of the contents.
        CHECK_FALSE(st == block_state::intact);
        w.res.deallocate(w.x.ptr, size);
      }
    }
  }
}
