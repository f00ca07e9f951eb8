// A re-seal whose translation barrier fails (4334f30) skips the step every
// successful re-seal makes: reading the old seal's witnesses again after the
// block went unsealed. A page lost during that seal() call (after its first
// look at the old witnesses) is then never noticed: the block is left live at
// a new generation with no witness of the loss, and the next seal() (the
// barrier works again) certifies the zeros as `intact`.
//
// With the barrier working, the very same drop at the very same point of the
// call makes seal() answer `dropped` (core/types.h: "the old witnesses are
// read again after the new ones are taken, so a page lost during the re-seal
// counts too"; droppable_resource.h: "no seal() can turn a lost page into
// intact"). The drop is made by the fake OS's barrier hook, i.e. inside the
// seal() call, while the caller holds a sealed block.
#include <doctest/doctest.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "allocator/dropalloc.h"
#include "allocator/os/fake_os.h"
#include "tests/attack15/common.h"
#include "tests/fake_resource.h"
#include "tests/pattern.h"

using dropalloc::block_ref;
using dropalloc::block_state;
using dropalloc::droppable_resource;

using attack15::fill;
using attack15::name;
using dropalloc::testing::all_zero;

namespace {

struct dropper {
  droppable_resource* res = nullptr;
  void* page = nullptr;  // the page to drop at the next barrier, if any
  static void hook(void* ctx) {
    auto* d = static_cast<dropper*>(ctx);
    if (d->page != nullptr) {
      REQUIRE(d->res->drop_for_testing(d->page, 4096) == 0);
      d->page = nullptr;
    }
  }
};

struct fake_resource {
  dropalloc::os::fake_os os;
  droppable_resource res;
  dropper d;
  explicit fake_resource(dropalloc::backing b) : res(dropalloc::testing::on_fake_os(os, b)) {
    d.res = &res;
    os.on_settle = &dropper::hook;
    os.on_settle_ctx = &d;
  }
};

constexpr std::size_t kSizes[] = {64, 6000, 16 * 1024, 256 * 1024};
constexpr dropalloc::backing kBackings[] = {dropalloc::backing::droppable, dropalloc::backing::private_fallback};

// The last page the block touches (its witness page for the drop).
void* last_page(void* p, std::size_t n) {
  auto a = reinterpret_cast<std::uintptr_t>(p) + n - 1;
  return reinterpret_cast<void*>(a & ~std::uintptr_t{4095});
}

}  // namespace

TEST_CASE("control: a page lost during a re-seal (barrier works) makes the re-seal answer dropped") {
  for (auto backing : kBackings) {
    fake_resource f(backing);
    for (std::size_t size : kSizes) {
      CAPTURE(static_cast<int>(backing));
      CAPTURE(size);
      block_ref b = f.res.allocate_block(size);
      fill(b.ptr, size, 1);
      REQUIRE(f.res.seal(b) == block_state::intact);
      static_cast<unsigned char*>(b.ptr)[0] ^= 0x55;  // a small update, then re-seal
      f.d.page = last_page(b.ptr, size);
      CHECK(f.res.seal(b) == block_state::dropped);
      CHECK(f.res.check(b.ptr, f.res.generation(b.ptr)) != block_state::intact);
      f.res.deallocate(b.ptr, size);
    }
  }
}

TEST_CASE("bug: the same drop during a re-seal whose barrier failed is forgotten; the retry says intact over zeros") {
  for (auto backing : kBackings) {
    fake_resource f(backing);
    for (std::size_t size : kSizes) {
      CAPTURE(static_cast<int>(backing));
      CAPTURE(size);
      block_ref b = f.res.allocate_block(size);
      fill(b.ptr, size, 1);
      REQUIRE(f.res.seal(b) == block_state::intact);
      std::vector<unsigned char> want(size);
      static_cast<unsigned char*>(b.ptr)[0] ^= 0x55;  // a small update, then re-seal
      std::memcpy(want.data(), b.ptr, size);

      f.d.page = last_page(b.ptr, size);  // lost during this seal() call
      f.os.settle_error = ENOMEM;
      const block_state first = f.res.seal(b);
      f.os.settle_error = 0;
      CHECK(first == block_state::dropped);  // refused: taken as lost

      // The caller retries (as the refusal invites): the block is live, so
      // seal() takes its witnesses from what it holds now.
      block_ref now{b.ptr, f.res.generation(b.ptr)};
      const block_state retry = f.res.seal(now);
      const bool lost_bytes = std::memcmp(now.ptr, want.data(), size) != 0;
      const std::size_t tail = reinterpret_cast<std::uintptr_t>(b.ptr) + size -
                               reinterpret_cast<std::uintptr_t>(last_page(b.ptr, size));
      MESSAGE("size ", size, ": retry -> ", name(retry), ", check -> ",
              name(f.res.check(now)), ", block lost bytes: ", std::string(lost_bytes ? "yes" : "no"),
              ", last page reads zeros: ", std::string(all_zero(last_page(b.ptr, size), tail) ? "yes" : "no"));
      // The promise: a page lost while (or during re-sealing while) the block
      // was sealed never becomes intact by a later seal().
      CHECK_FALSE((f.res.check(now) == block_state::intact && lost_bytes));
      f.res.deallocate(b.ptr, size);
    }
  }
}
