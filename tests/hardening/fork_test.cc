// fork() from a multi-threaded parent, droppable and fallback backings: the
// child inherits no held allocator lock, finds every block it inherited
// dropped (droppable memory and the fallback's MADV_WIPEONFORK are wiped), and
// can allocate, seal and check; the parent's threads never notice.
#include <doctest/doctest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <thread>
#include <vector>

#include "allocator/dropalloc.h"

using dropalloc::block_state;

TEST_CASE("fork while threads allocate, seal and check") {
  for (bool fallback : {false, true}) {
    CAPTURE(fallback);
    dropalloc::resource_options opts;
    opts.force_fallback = fallback;
    dropalloc::droppable_resource res(opts);
    std::vector<dropalloc::block_ref> mine;
    for (std::size_t size : {24, 500, 4096, 30000, 400000}) {
      auto b = res.allocate_block(size);
      std::memset(b.ptr, 0x6b, size);
      REQUIRE(res.seal(b.ptr) == block_state::intact);
      mine.push_back(b);
    }
    std::atomic<bool> stop{false};
    std::atomic<int> bad{0};
    std::vector<std::thread> busy;
    for (int t = 0; t < 3; ++t) {
      busy.emplace_back([&, t] {
        std::vector<dropalloc::block_ref> held;
        std::size_t i = 0;
        while (!stop.load(std::memory_order_relaxed)) {
          ++i;
          std::size_t size = 8 + (i * 7919 + static_cast<std::size_t>(t)) % (i % 8 == 0 ? 70000 : 2000);
          auto b = res.allocate_block(size);
          std::memset(b.ptr, 0x11, size);
          if (res.seal(b.ptr) != block_state::intact) ++bad;
          held.push_back(b);
          if (held.size() > 200) {
            for (auto& h : held) {
              if (res.check(h.ptr, h.generation) != block_state::intact) ++bad;
              res.deallocate(h.ptr, 1);
            }
            held.clear();
          }
        }
        for (auto& h : held) res.deallocate(h.ptr, 1);
      });
    }
    for (int round = 0; round < 10; ++round) {
      fflush(nullptr);
      pid_t pid = fork();
      REQUIRE(pid >= 0);
      if (pid == 0) {
        int code = 0;
        for (auto& b : mine) {
          if (res.check(b.ptr, b.generation) != block_state::dropped) code |= 1;
        }
        // No C library allocation in the child: under ThreadSanitizer that
        // allocator is the runtime's, and GCC 12's runtime does not hold its
        // locks across fork(), so a busy thread could have left one taken.
        dropalloc::block_ref fresh[5];
        int n_fresh = 0;
        for (std::size_t size : {24, 500, 4096, 30000, 400000}) {
          auto b = res.allocate_block(size);
          std::memset(b.ptr, 0x22, size);
          if (res.seal(b.ptr) != block_state::intact) code |= 2;
          fresh[n_fresh++] = b;
        }
        for (auto& b : fresh) {
          if (res.check(b.ptr, b.generation) != block_state::intact) code |= 4;
          res.deallocate(b.ptr, 1);
        }
        _exit(code);
      }
      int status = 0;
      REQUIRE(waitpid(pid, &status, 0) == pid);
      REQUIRE(WIFEXITED(status));
      CHECK(WEXITSTATUS(status) == 0);
    }
    stop = true;
    for (auto& t : busy) t.join();
    CHECK(bad.load() == 0);
    for (auto& b : mine) {
      CHECK(res.check(b.ptr, b.generation) == block_state::intact);
      CHECK(static_cast<unsigned char*>(b.ptr)[0] == 0x6b);
      res.deallocate(b.ptr, 1);
    }
  }
}
