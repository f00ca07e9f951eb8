// Signal handlers that land anywhere in a thread's code: the set-up of the
// tests that put a handler inside a free (tests/attack14, tests/attack20,
// tests/attack21).
#pragma once

#include <pthread.h>
#include <signal.h>

#include <atomic>
#include <cstring>
#include <thread>

namespace dropalloc::testing {

// Installs `handler` for `sig`: nothing masked, interrupted calls restarted.
// False if sigaction refused.
inline bool install_signal_handler(int sig, void (*handler)(int)) {
  struct sigaction sa;
  std::memset(&sa, 0, sizeof sa);
  sa.sa_handler = handler;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  return sigaction(sig, &sa, nullptr) == 0;
}

// Runs owner(ready) on a thread of its own and sends that thread `sig` again
// and again, as fast as the calling thread can, from the moment the owner
// calls ready() until it returns. Then `sig` is ignored again.
template <class Owner>
void signal_storm(int sig, Owner&& owner) {
  std::atomic<bool> ready{false};
  std::atomic<bool> done{false};
  pthread_t target{};
  std::thread thread([&] {
    target = pthread_self();  // read only once ready is seen
    owner([&] { ready.store(true, std::memory_order_release); });
    done.store(true, std::memory_order_release);
  });
  while (!ready.load(std::memory_order_acquire) && !done.load(std::memory_order_acquire)) std::this_thread::yield();
  while (!done.load(std::memory_order_acquire)) {
    pthread_kill(target, sig);
    for (int i = 0; i < 200; ++i) asm volatile("" ::: "memory");  // a gap, so that the owner makes progress
  }
  thread.join();
  signal(sig, SIG_IGN);
}

}  // namespace dropalloc::testing
