// Fills a block, simulates the kernel dropping one of its pages, finds out
// through the drop check and rebuilds it. Exits 0 when each step answered as
// documented.
#include <cstdio>
#include <cstring>
#include <vector>

#include "allocator/dropalloc.h"

namespace {

std::vector<unsigned char> render(std::size_t n) {  // stands for costly work
  std::vector<unsigned char> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = static_cast<unsigned char>(i * 31 + 7);
  return v;
}

bool expect(bool ok, const char* what) {
  std::printf("%-44s %s\n", what, ok ? "ok" : "FAILED");
  return ok;
}

}  // namespace

int main() {
  std::printf("dropalloc %s\n", dropalloc::version());
  constexpr std::size_t kBytes = 64 * 1024;
  dropalloc::droppable_resource res;
  const std::vector<unsigned char> image = render(kBytes);

  dropalloc::block_ref b = res.allocate_block(kBytes);
  bool ok = expect(res.write_and_seal(b.ptr, image.data(), kBytes) == dropalloc::block_state::intact,
                   "written and sealed: intact");

  // What the kernel does under memory pressure: the page reads as zeros.
  ok &= expect(res.drop_for_testing(static_cast<char*>(b.ptr) + 8192, 4096) == 0, "one page dropped (simulated)");
  ok &= expect(res.check(b) == dropalloc::block_state::dropped, "drop check: dropped");

  ok &= expect(res.write_and_seal(b.ptr, image.data(), kBytes) == dropalloc::block_state::intact,
               "rebuilt: intact again");
  ok &= expect(std::memcmp(b.ptr, image.data(), kBytes) == 0, "contents as written");
  res.deallocate(b);
  ok &= expect(res.check(b) == dropalloc::block_state::stale, "after free: stale");
  return ok ? 0 : 1;
}
