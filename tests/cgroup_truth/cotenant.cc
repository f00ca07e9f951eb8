#include "tests/cgroup_truth/cotenant.h"

#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cstring>

namespace dropalloc::truth {
namespace {

constexpr std::size_t kChunk = 4u << 20;
constexpr std::size_t kMaxChunks = 64;

// Never returns. Only system calls: it runs in a fork of a process whose
// allocator state it must not rely on.
[[noreturn]] void churn(std::size_t hold_bytes, pid_t parent) {
  // Dies with its parent, so a crashed test leaves no process in the cgroup
  // (the cgroup could not be removed while one remains).
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() != parent) _exit(0);
  std::size_t chunks = hold_bytes / kChunk;
  if (chunks == 0) chunks = 1;
  if (chunks > kMaxChunks) chunks = kMaxChunks;
  void* ring[kMaxChunks] = {};
  for (std::size_t k = 0;; k = (k + 1) % chunks) {
    if (ring[k] != nullptr) munmap(ring[k], kChunk);
    ring[k] = mmap(nullptr, kChunk, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (ring[k] == MAP_FAILED) {
      ring[k] = nullptr;
    } else {
      std::memset(ring[k], static_cast<int>(k + 1), kChunk);
    }
    // 4 MiB of new memory every 20 ms: steady demand without eating a core.
    timespec pause{0, 20 * 1000 * 1000};
    nanosleep(&pause, nullptr);
  }
}

}  // namespace

cotenant::cotenant(std::size_t hold_bytes) {
  if (hold_bytes == 0) return;
  pid_t parent = getpid();
  pid_ = fork();
  if (pid_ == 0) churn(hold_bytes, parent);
}

bool cotenant::stop() {
  if (pid_ <= 0) return true;
  int status = 0;
  bool alive = waitpid(pid_, &status, WNOHANG) == 0;
  if (alive) {
    kill(pid_, SIGKILL);
    waitpid(pid_, &status, 0);
  }
  pid_ = -1;
  return alive;
}

}  // namespace dropalloc::truth
