// A process forked while one of its threads is unmapping a batch of retired
// segments (core/segment.h, retire::batched): that thread does not exist in
// the child, so the segments it took stay mapped there, and the child's
// heaps must not wait for them (heap::recount_retired_after_fork). Fork in a
// threaded process: not under ThreadSanitizer.
#include <doctest/doctest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <thread>

#include "allocator/core/heap.h"
#include "allocator/core/segment.h"
#include "allocator/os/fake_os.h"
#include "tests/core_heap.h"
#include "tests/forwarding_os.h"

namespace core = dropalloc::core;
namespace os = dropalloc::os;
using dropalloc::testing::free_growing;
using dropalloc::testing::stalling_os;
using dropalloc::testing::with_os_no_decay;

namespace {

constexpr std::size_t kLarge = 300 * 1024;
constexpr int kCacheSlots = 16;

}  // namespace

TEST_CASE("a child forked mid-batch destroys the heaps whose segments the batch held, without waiting") {
  os::fake_os real_b;
  stalling_os os_b(real_b);
  auto* b = new core::heap(with_os_no_decay(&os_b));
  os::fake_os os_a;
  auto* a = new core::heap(with_os_no_decay(&os_a));
  core::unmap_deferred_segments();
  free_growing(*a, kLarge, kCacheSlots + 2);  // two of a's wait
  std::thread flusher([&] {
    const std::size_t next = free_growing(*b, 8 * kLarge, kCacheSlots);
    os_b.stall.store(true);
    free_growing(*b, next, static_cast<int>(core::kRetiredBatchSegments) - 2);  // takes all, a's too, and stalls
  });
  while (!os_b.stalled.load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));

  const pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    alarm(20);  // a wait for the vanished flusher would end here, as SIGALRM
    delete a;
    delete b;
    _exit(a != nullptr ? 0 : 1);
  }
  int status = 0;
  REQUIRE(waitpid(pid, &status, 0) == pid);
  CHECK_MESSAGE(WIFEXITED(status), "the child did not exit (signal ", WTERMSIG(status), ")");
  CHECK(WEXITSTATUS(status) == 0);

  os_b.release.store(true);
  flusher.join();
  delete a;
  delete b;
  CHECK(os_a.arena_maps.load() == os_a.arena_unmaps.load());
}
