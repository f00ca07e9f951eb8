// object_arena::seal() promises "true means the contents are exactly what was
// written" (allocator/cache/object_arena.h). For a chunk of its own larger
// than about a page (the `probe` chunks), the only protection against a page
// dropped before the seal is a residency check (mincore) made before seal()
// reads the pages: "a page dropped and not written again since reads as not
// resident". But a page dropped and then merely *read* (not written) is
// resident again: the read maps the shared zero page (see FACTS: "After a
// read of a dropped page, mincore and pagemap report it resident again").
// A builder reading back what it wrote (a checksum, a vector growing, a
// lookup in its own table) is ordinary. The header admits only one blind
// spot, "a page dropped and then partly rewritten by the builder"; this one
// needs no write at all. The chunk is then sealed over zeros, seal() returns
// true and intact() keeps saying true over contents the builder never wrote.
//
// Where: allocator/cache/object_arena.h, object_arena::seal() (the `probe`
// residency check) and do_allocate() (which writes canaries only to be
// overwritten by the caller, so no canary survives on those pages).
#include <doctest/doctest.h>

#include <cstring>
#include <vector>

#include "allocator/cache/object_arena.h"
#include "allocator/dropalloc.h"

using dropalloc::droppable_resource;
using dropalloc::object_arena;

namespace {

void run(droppable_resource& res, std::size_t bytes) {
  object_arena arena(res);
  auto* p = static_cast<unsigned char*>(arena.allocate(bytes, 8));
  std::vector<unsigned char> want(bytes);
  for (std::size_t k = 0; k < bytes; ++k) want[k] = static_cast<unsigned char>(k % 251 + 1);
  std::memcpy(p, want.data(), bytes);  // the builder writes its object
  // The kernel drops the second page while the builder is still at work.
  REQUIRE(res.drop_for_testing(p + 4096, 1) == 0);
  // The builder reads back what it wrote (here: a sum over its buffer). No write.
  unsigned long sum = 0;
  for (std::size_t k = 0; k < bytes; ++k) sum += __atomic_load_n(p + k, __ATOMIC_RELAXED);
  CHECK(sum != 0);
  const bool sealed_whole = arena.seal();
  const bool same = std::memcmp(p, want.data(), bytes) == 0;
  CHECK_FALSE(same);  // the second page reads zeros
  CHECK_MESSAGE(!(sealed_whole && !same),
                "object_arena::seal() returned true (\"contents are exactly what was written\") over a page "
                "that was dropped and then only read");
  CHECK_MESSAGE(!(arena.intact() && !same), "object_arena::intact() says true over zeros the builder never wrote");
}

}  // namespace

TEST_CASE("object_arena: a page of an own chunk dropped, then read, is sealed as whole") {
  droppable_resource res;
  SUBCASE("3 pages") { run(res, 3 * 4096); }
  SUBCASE("20000 bytes") { run(res, 20000); }
}

TEST_CASE("the same in the private fallback") {
  dropalloc::resource_options o;
  o.force_fallback = true;
  droppable_resource res(o);
  run(res, 3 * 4096);
}
