// A source buffer whose first read parks the reading thread until someone
// "materializes" the page, as lazily restored memory does: a userfaultfd
// region (the reader waits in the kernel; no code of the program runs on it)
// where the kernel allows one, else a PROT_NONE page whose fault handler
// waits (the same dependency, built from a signal handler).
//
// The page is served by whoever calls serve() first: the materializer thread
// once its work is done, or the test's watchdog when that work never ends.
#pragma once

#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>

namespace attack7 {

class parked_source {
 public:
  static constexpr std::size_t kPage = 4096;

  // Contents the page gets when served.
  explicit parked_source(unsigned char fill) {
    std::memset(content_, fill, sizeof content_);
    page_ = static_cast<unsigned char*>(
        mmap(nullptr, kPage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    if (page_ == MAP_FAILED) {
      page_ = nullptr;
      return;
    }
    uffd_ = static_cast<int>(syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK));
    if (uffd_ >= 0) {
      uffdio_api api{};
      api.api = UFFD_API;
      uffdio_register reg{};
      reg.range.start = reinterpret_cast<unsigned long>(page_);
      reg.range.len = kPage;
      reg.mode = UFFDIO_REGISTER_MODE_MISSING;
      if (ioctl(uffd_, UFFDIO_API, &api) != 0 || ioctl(uffd_, UFFDIO_REGISTER, &reg) != 0) {
        close(uffd_);
        uffd_ = -1;
      }
    }
    if (uffd_ < 0) {
      // Fallback: a PROT_NONE page and a SIGSEGV handler that waits.
      std::memcpy(page_, content_, kPage);
      mprotect(page_, kPage, PROT_NONE);
      current() = this;
      struct sigaction sa;
      std::memset(&sa, 0, sizeof sa);
      sa.sa_sigaction = on_fault;
      sa.sa_flags = SA_SIGINFO;
      sigemptyset(&sa.sa_mask);
      sigaction(SIGSEGV, &sa, &previous_);
    }
  }
  ~parked_source() {
    serve();
    if (uffd_ >= 0) close(uffd_);
    if (uffd_ < 0 && page_ != nullptr) {
      sigaction(SIGSEGV, &previous_, nullptr);
      current() = nullptr;
    }
    if (page_ != nullptr) munmap(page_, kPage);
  }
  parked_source(const parked_source&) = delete;
  parked_source& operator=(const parked_source&) = delete;

  bool ok() const { return page_ != nullptr; }
  const char* mechanism() const { return uffd_ >= 0 ? "userfaultfd" : "PROT_NONE page + waiting fault handler"; }
  const unsigned char* data() const { return page_; }
  const unsigned char* content() const { return content_; }

  // Waits (up to timeout_ms) until some thread is parked reading the page.
  bool wait_parked(int timeout_ms) {
    for (int waited = 0; waited < timeout_ms; waited += 5) {
      if (parked()) return true;
      usleep(5000);
    }
    return parked();
  }
  bool parked() {
    if (uffd_ < 0) return parked_.load() != 0;
    if (parked_.load() != 0) return true;
    pollfd p{uffd_, POLLIN, 0};
    if (poll(&p, 1, 0) == 1) {
      uffd_msg msg;
      if (read(uffd_, &msg, sizeof msg) == static_cast<ssize_t>(sizeof msg) && msg.event == UFFD_EVENT_PAGEFAULT) {
        parked_.store(1);
      }
    }
    return parked_.load() != 0;
  }
  // Makes the page readable and lets the parked reader go on (idempotent).
  void serve() {
    if (served_.exchange(true)) return;
    if (uffd_ >= 0) {
      uffdio_copy copy{};
      copy.dst = reinterpret_cast<unsigned long>(page_);
      copy.src = reinterpret_cast<unsigned long>(content_);
      copy.len = kPage;
      ioctl(uffd_, UFFDIO_COPY, &copy);
    } else {
      go_.store(1);
    }
  }

 private:
  static parked_source*& current() {
    static parked_source* p = nullptr;
    return p;
  }
  static void on_fault(int sig, siginfo_t* info, void*) {
    parked_source* self = current();
    auto* a = static_cast<unsigned char*>(info->si_addr);
    if (self != nullptr && a >= self->page_ && a < self->page_ + kPage) {
      self->parked_.store(1);
      while (self->go_.load() == 0) {
      }
      mprotect(self->page_, kPage, PROT_READ);
      return;
    }
    sigaction(sig, &self->previous_, nullptr);
  }

  unsigned char* page_ = nullptr;
  int uffd_ = -1;
  alignas(4096) unsigned char content_[kPage];
  std::atomic<int> parked_{0};
  std::atomic<int> go_{0};
  std::atomic<bool> served_{false};
  struct sigaction previous_;
};

// The seal stripe a block's seal lock is taken from (allocator/core/seal_check.cc,
// seal_lock_for): a test-side copy, used only to pick blocks that share one.
inline unsigned seal_stripe(const void* p) {
  auto a = reinterpret_cast<std::uintptr_t>(p);
  return static_cast<unsigned>((a >> 6 ^ a >> 12 ^ a >> 22) % 64);
}

}  // namespace attack7
