// Deterministic: what happens around the release of a tail (b7fd46a), with
// the OS layer steered. A fake under both backings; 128 KiB class blocks
// (32 pages) and a 300 KB large block; n = 1, a page, 16 pages short of the
// end (exactly 16 released), 15 (none released).
//   - release fails (EIO), after zeroing 0, 3 or all of its pages;
//   - a page is dropped just before, just after the release, or at the
//     barrier: the value's first / last page, the partial page before the
//     released span, the partial page after it (large block), a released
//     page, a neighbour's page;
//   - a reader holding the old (sealed) life checks inside the release and
//     after: never intact; its copy is never vouched for.
// Every answer: if check() says intact, the bytes are src then zeros.
#include <doctest/doctest.h>

#include <cstring>
#include <string>
#include <vector>

#include "allocator/dropalloc.h"
#include "tests/attack18/common.h"

using attack18::fill;
using attack18::holds;
using attack18::kPage;
using attack18::name;
using dropalloc::block_ref;
using dropalloc::block_state;
using dropalloc::droppable_resource;

namespace {

enum class when { before_release, after_release, at_settle };

struct setup {
  attack18::steered_os os;
  droppable_resource* res = nullptr;
};

void one(droppable_resource& res, attack18::steered_os& os, std::size_t size, std::size_t n, int fail_mode,
         when w, long drop_page_rel, long& cases) {
  block_ref left = res.allocate_block(size);
  block_ref b = res.allocate_block(size);
  const std::size_t usable = res.usable_size(b.ptr);
  auto* p = static_cast<unsigned char*>(b.ptr);
  std::vector<unsigned char> old(usable), src(n ? n : 1), nb(res.usable_size(left.ptr));
  fill(old.data(), usable, 11);
  fill(src.data(), n, 12 + n);
  fill(nb.data(), nb.size(), 13);
  REQUIRE(res.write_and_seal(left, nb.data(), nb.size()) == block_state::intact);
  REQUIRE(res.write_and_seal(b, old.data(), usable) == block_state::intact);
  const std::uint64_t old_gen = b.generation;
  const std::size_t pages = usable / kPage;
  // The page to drop: relative codes resolved against n.
  long pg = drop_page_rel;
  const long first_released = static_cast<long>((n + kPage - 1) / kPage);
  switch (drop_page_rel) {
    case -1: pg = 0; break;
    case -2: pg = n == 0 ? 0 : static_cast<long>((n - 1) / kPage); break;
    case -3: pg = static_cast<long>(n / kPage); break;  // partial page before the span
    case -4: pg = static_cast<long>(pages) - 1; break;
    case -5: pg = first_released + 1; break;
    case -6: pg = -1000; break;  // the neighbour's last page
    default: break;
  }
  if (pg != -1000 && pg >= static_cast<long>(pages)) pg = static_cast<long>(pages) - 1;
  os.release_error.store(fail_mode == 0 ? 0 : EIO);
  os.zero_pages_before_failing.store(fail_mode == 1 ? 0 : fail_mode == 2 ? 3 : 1000);
  std::vector<unsigned char> copy(usable);
  block_state reader_during = block_state::foreign;
  bool hooked = false;
  auto hook = [&] {
    if (hooked) return;
    hooked = true;
    std::memcpy(copy.data(), p, usable);
    reader_during = res.check(p, old_gen);
    void* at = pg == -1000 ? static_cast<void*>(static_cast<char*>(left.ptr) + (nb.size() - 1) / kPage * kPage)
                           : static_cast<void*>(p + static_cast<std::size_t>(pg) * kPage);
    const int rc = res.drop_for_testing(at, 1);
    CHECK_MESSAGE(rc == 0, "drop rc ", rc, " page ", pg, " of ", pages);
  };
  if (w == when::before_release) os.before_release = [&](void*, std::size_t) { hook(); };
  if (w == when::after_release) os.after_release = [&](void*, std::size_t) { hook(); };
  if (w == when::at_settle) os.on_settle = [&] { hook(); };
  const block_state st = res.write_and_seal(b, src.data(), n);
  os.before_release = nullptr;
  os.after_release = nullptr;
  os.on_settle = nullptr;
  os.release_error.store(0);
  ++cases;
  CAPTURE(name(st));
  const bool right = holds(p, usable, src.data(), n);
  if (st == block_state::intact) CHECK_MESSAGE(right, "write_and_seal said intact over other bytes");
  const block_state c = res.check(b);
  if (c == block_state::intact) CHECK_MESSAGE(right, "check said intact over other bytes");
  if (hooked) {
    CHECK_MESSAGE(reader_during != block_state::intact, "old life intact during the rewrite: ", name(reader_during));
  }
  const block_state old_after = res.check(p, old_gen);
  CHECK_MESSAGE(old_after != block_state::intact, "old life intact after the rewrite: ", name(old_after));
  const block_state l = res.check(left);
  if (l == block_state::intact) CHECK(holds(static_cast<unsigned char*>(left.ptr), nb.size(), nb.data(), nb.size()));
  // Drops afterwards, one per page: never intact over other bytes.
  if (st == block_state::intact) {
    for (std::size_t q = 0; q < pages; q += 3) {
      REQUIRE(res.drop_for_testing(p + q * kPage, 1) == 0);
      const bool still = holds(p, usable, src.data(), n);
      const block_state d = res.check(b);
      if (!still) CHECK_MESSAGE(d != block_state::intact, "intact after a drop of page ", q);
    }
  }
  res.deallocate(b.ptr, size);
  res.deallocate(left.ptr, size);
}

}  // namespace

TEST_CASE("tail release with failures, drops and readers around it") {
  long cases = 0;
  for (auto backing : {dropalloc::backing::droppable, dropalloc::backing::private_fallback}) {
    attack18::steered_os os;
    os.inner.reported_backing = backing;
    dropalloc::resource_options o;
    o.os = &os;
    droppable_resource res(o);
    for (std::size_t size : {std::size_t{128} << 10, std::size_t{300000}}) {
      const std::size_t usable = res.usable_size(res.allocate_block(size).ptr);  // leaked: one block
      for (std::size_t n : {std::size_t{1}, kPage, usable - 16 * kPage, usable - 16 * kPage + 1,
                            usable - 15 * kPage}) {
        for (int fail_mode : {0, 1, 2, 3}) {
          for (when w : {when::before_release, when::after_release, when::at_settle}) {
            for (long d : {-1L, -2L, -3L, -4L, -5L, -6L}) {
              CAPTURE(size);
              CAPTURE(n);
              CAPTURE(fail_mode);
              CAPTURE(static_cast<int>(w));
              CAPTURE(d);
              one(res, os, size, n, fail_mode, w, d, cases);
            }
          }
        }
      }
    }
    MESSAGE(cases, " cases, ", os.releases.load(), " releases, ", os.failed_releases.load(), " failed");
  }
}
