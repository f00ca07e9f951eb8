// The private fallback's re-advice of a block found dropped, one situation at
// a time, on a fake OS that zeroes every page it is given (page_guard_os with
// drop_percent 100: the kernel taking advised pages at once) and checks that
// each advised page holds only sealed or dropped blocks.
#include <doctest/doctest.h>

#include <cstring>
#include <vector>

#include "allocator/dropalloc.h"
#include "tests/attack17/page_guard_os.h"

using dropalloc::block_ref;
using dropalloc::block_state;
using dropalloc::droppable_resource;

namespace {

constexpr std::uintptr_t kPage = 4096;
std::uintptr_t page_of(const void* p) { return reinterpret_cast<std::uintptr_t>(p) & ~(kPage - 1); }

bool all_bytes(const void* p, std::size_t n, unsigned char v) {
  auto* b = static_cast<const unsigned char*>(p);
  for (std::size_t i = 0; i < n; ++i) {
    if (b[i] != v) return false;
  }
  return true;
}

struct fixture {
  attack17::page_guard_os os;
  droppable_resource res;
  static dropalloc::resource_options options(attack17::page_guard_os& os) {
    os.drop_percent = 100;
    dropalloc::resource_options o;
    o.os = &os;
    o.thread_cache = false;  // blocks in address order
    o.background_decay = false;
    return o;
  }
  fixture() : res(options(os)) {}
  ~fixture() {
    for (const auto& v : os.violations()) MESSAGE(v);
    CHECK(os.violations().empty());
  }
  std::vector<block_ref> written(int count, std::size_t n) {
    std::vector<block_ref> b;
    for (int i = 0; i < count; ++i) {
      b.push_back(res.allocate_block(n));
      std::memset(b.back().ptr, 0x41 + i, n);
    }
    return b;
  }
};

// Runs inside write_and_seal of `writing`, under its seal lock, after its bytes
// were written and before its witnesses are taken.
struct in_write {
  droppable_resource* res;
  block_ref lost;
  int runs = 0;
  block_state seen = block_state::foreign;
  static void hook(void* ctx) {
    auto* self = static_cast<in_write*>(ctx);
    if (self->runs++ != 0) return;
    self->seen = self->res->check(self->lost);  // sealed -> dropped: re-advised now
    (void)self->res->seal(self->lost.ptr);       // and again by a seal that finds it dropped
    (void)self->res->check_all();
  }
};

}  // namespace

TEST_CASE("a block found dropped while its neighbour on the shared page is in write_and_seal") {
  for (std::size_t n : {std::size_t{3000}, std::size_t{64}, std::size_t{2000}}) {
    CAPTURE(n);
    fixture f;
    auto b = f.written(3, n);
    REQUIRE(page_of(b[0].ptr) == page_of(b[1].ptr));
    REQUIRE(f.res.seal(b[0]) == block_state::intact);  // shares its page with live b[1]: not advised
    std::memset(b[0].ptr, 0, n);                       // its witness reads zero: a loss to find
    in_write w{&f.res, b[0]};
    f.os.inner.on_settle = &in_write::hook;
    f.os.inner.on_settle_ctx = &w;
    std::vector<unsigned char> src(n, 0x77);
    const block_state st = f.res.write_and_seal(b[1], src.data(), n);
    f.os.inner.on_settle = nullptr;
    CHECK(w.seen == block_state::dropped);
    // b[1] was being written: the page was not given away meanwhile (the
    // guard). Its own advice after the seal may take the page it shares with
    // dropped b[0] (zeroed here at once): then it reads dropped, not intact.
    if (st == block_state::intact) CHECK(all_bytes(b[1].ptr, n, 0x77));
    if (!all_bytes(b[1].ptr, n, 0x77)) CHECK(f.res.check(b[1]) == block_state::dropped);
    CHECK(all_bytes(b[2].ptr, n, 0x43));  // unsealed
    CHECK(f.res.check(b[2]) == block_state::unsealed);
    for (auto& x : b) f.res.deallocate(x);
  }
}

TEST_CASE("a block found dropped next to a free block, then the free block handed out and written") {
  fixture f;
  constexpr std::size_t n = 3000;
  auto b = f.written(3, n);
  REQUIRE(f.res.seal(b[0]) == block_state::intact);
  REQUIRE(f.res.seal(b[2]) == block_state::intact);
  f.res.deallocate(b[1]);
  std::memset(b[0].ptr, 0, n);
  std::memset(b[2].ptr, 0, n);
  CHECK(f.res.check(b[0]) == block_state::dropped);
  CHECK(f.res.check(b[2]) == block_state::dropped);
  block_ref again = f.res.allocate_block(n);
  CHECK(again.ptr == b[1].ptr);
  std::memset(again.ptr, 0x55, n);
  CHECK(f.res.seal(b[0].ptr) == block_state::dropped);
  CHECK(f.res.seal(b[2].ptr) == block_state::dropped);
  CHECK(all_bytes(again.ptr, n, 0x55));
  CHECK(f.res.check(again) == block_state::unsealed);
  // Revived with write_and_seal: verified, so intact means the bytes are there.
  std::vector<unsigned char> src(n, 0x66);
  block_state st = f.res.write_and_seal(b[0], src.data(), n);
  if (st == block_state::intact) CHECK(all_bytes(b[0].ptr, n, 0x66));
  CHECK(all_bytes(again.ptr, n, 0x55));
  f.res.deallocate(again);
  f.res.deallocate(b[0]);
  f.res.deallocate(b[2]);
}

TEST_CASE("a dropped block sharing a page only with sealed and dropped blocks: the page goes, every loss is seen") {
  fixture f;
  constexpr std::size_t n = 64;  // 64 blocks per page
  auto b = f.written(64, n);
  REQUIRE(page_of(b[0].ptr) == page_of(b[63].ptr));
  for (int i = 0; i < 63; ++i) REQUIRE(f.res.seal(b[i]) == block_state::intact);  // b[63] live: page kept
  std::memset(b[5].ptr, 0, n);
  const long before = f.os.calls.load();
  CHECK(f.res.check(b[5]) == block_state::dropped);
  CHECK(f.os.calls.load() == before);  // the page holds live b[63]
  CHECK(all_bytes(b[63].ptr, n, 0x41 + 63));
  for (int i = 0; i < 63; ++i) {
    if (i != 5) CHECK(f.res.check(b[i]) == block_state::intact);
  }
  REQUIRE(f.res.seal(b[63]) != block_state::intact);  // the page is now all sealed: given (and zeroed)
  int dropped = 0;
  for (int i = 0; i < 64; ++i) dropped += f.res.check(b[i]) == block_state::dropped;
  CHECK(dropped == 64);
  for (auto& x : b) f.res.deallocate(x);
}
