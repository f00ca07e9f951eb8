// KNOWN BUG (demonstration; fails while the bug exists).
//
// A refused free (foreign, interior or double) is reported with write(2) on
// stderr from *inside* a read section (heap::deallocate_checked keeps its
// read_section alive across report_misuse). When stderr is a pipe or a
// terminal that is not being drained, that write blocks, and with it the
// read section: every grace period in the process (a large free, trim,
// decay, a resource's destructor) then waits for that thread, for as long as
// stderr stays blocked. The misuse is the caller's; the hang is in another,
// innocent thread that frees its own block.
//
// Contract relied on: "no crash or hang on any input (NULL, foreign
// pointers, double frees, stale handles)"; README: double and foreign frees
// are "refused and reported" (ignored otherwise).
#include <doctest/doctest.h>

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <thread>

#include "allocator/dropalloc.h"

using dropalloc::droppable_resource;

TEST_CASE("a foreign free reported to a full stderr pipe stalls other threads' large frees [KNOWN BUG]") {
  droppable_resource res;
  // A large block whose free unmaps its arena (too big for the large-block
  // cache), so it waits for a grace period.
  void* big = res.allocate(40u << 20, 64);
  std::memset(big, 1, 4096);

  // stderr becomes a pipe that nobody reads, filled to the brim.
  int fds[2];
  REQUIRE(pipe(fds) == 0);
  int saved_stderr = dup(STDERR_FILENO);
  REQUIRE(saved_stderr >= 0);
  REQUIRE(dup2(fds[1], STDERR_FILENO) == STDERR_FILENO);
  int fl = fcntl(fds[1], F_GETFL);
  fcntl(fds[1], F_SETFL, fl | O_NONBLOCK);
  char junk[4096];
  std::memset(junk, 'x', sizeof junk);
  while (write(fds[1], junk, sizeof junk) > 0) {
  }
  while (write(fds[1], junk, 1) > 0) {
  }
  fcntl(fds[1], F_SETFL, fl);  // blocking again, as stderr normally is

  // Thread A: a foreign free. Its report blocks on the full pipe.
  static int not_ours;
  std::atomic<bool> a_done{false};
  std::thread a([&] {
    res.deallocate(&not_ours, sizeof not_ours, alignof(int));
    a_done.store(true);
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(200));

  // Thread B frees its own large block: it has nothing to do with A.
  std::atomic<bool> b_done{false};
  std::thread b([&] {
    res.deallocate(big, 40u << 20, 64);
    b_done.store(true);
  });
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  while (!b_done.load() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  bool b_finished_in_time = b_done.load();
  bool a_blocked = !a_done.load();

  // Drain the pipe: A's report completes, and with it the grace period.
  fcntl(fds[0], F_SETFL, fcntl(fds[0], F_GETFL) | O_NONBLOCK);
  char sink[65536];
  while (!a_done.load() || !b_done.load()) {
    while (read(fds[0], sink, sizeof sink) > 0) {
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  a.join();
  b.join();
  dup2(saved_stderr, STDERR_FILENO);
  close(saved_stderr);
  close(fds[0]);
  close(fds[1]);

  MESSAGE("foreign free blocked in its report: " << a_blocked
                                                 << "; the other thread's large free finished within 2 s: "
                                                 << b_finished_in_time);
  CHECK(b_finished_in_time);
}
