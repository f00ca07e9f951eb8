// Regression: fork() while every reader slot is held by a live thread (so the
// forking thread has no slot and reads under the overflow lock), and fork()
// from a thread with a slot while another thread sits inside a read section.
// In the child, new threads check, allocate, free and trim (grace periods):
// nothing may hang (alarm) and checks must answer right.
#include <doctest/doctest.h>
#include <pthread.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <vector>

#include "allocator/core/grace.h"
#include "allocator/dropalloc.h"

using dropalloc::block_ref;
using dropalloc::block_state;
using dropalloc::droppable_resource;

namespace {

droppable_resource* g_r;
block_ref g_b;
std::atomic<int> g_ready{0};
int g_pipe[2];
std::atomic<bool> g_in_section{false}, g_leave{false};

void* holder(void*) {
  (void)g_r->check(g_b);
  g_ready.fetch_add(1);
  char c;
  if (read(g_pipe[0], &c, 1) < 0) return nullptr;  // woken either way: by a byte or by EOF
  return nullptr;
}

void* sitter(void*) {
  dropalloc::core::read_section r;
  g_in_section.store(true);
  while (!g_leave.load()) usleep(1000);
  return nullptr;
}

std::atomic<int> g_bad{0};
void* child_worker(void*) {
  for (int i = 0; i < 200; ++i) {
    if (g_r->check(g_b) != block_state::intact) g_bad.fetch_add(1);
    block_ref x = g_r->allocate_block(4096 + 64 * (i % 8));
    (void)g_r->seal(x);
    g_r->deallocate(x);
    if (g_r->check(x) != block_state::stale) g_bad.fetch_add(1);
  }
  return nullptr;
}

int in_child() {
  alarm(60);
  std::vector<pthread_t> ts(40);
  for (auto& t : ts) pthread_create(&t, nullptr, child_worker, nullptr);
  for (int k = 0; k < 20; ++k) (void)g_r->trim();
  for (auto& t : ts) pthread_join(t, nullptr);
  (void)g_r->trim();
  return g_bad.load() == 0 ? 0 : 1;
}

int fork_and_wait() {
  pid_t pid = fork();
  if (pid == 0) _exit(in_child());
  int st = 0;
  waitpid(pid, &st, 0);
  return WIFEXITED(st) ? WEXITSTATUS(st) : 100 + WTERMSIG(st);
}

int g_result = -1;
void* forker(void*) {
  (void)g_r->check(g_b);  // no slot left: an overflow reader
  g_result = fork_and_wait();
  return nullptr;
}

}  // namespace

TEST_CASE("fork with every slot held, from a thread without one and from one with one") {
  droppable_resource r;
  g_r = &r;
  g_b = r.allocate_block(64);
  REQUIRE(r.seal(g_b) == block_state::intact);
  REQUIRE(pipe(g_pipe) == 0);
  pthread_t s;
  pthread_create(&s, nullptr, sitter, nullptr);
  while (!g_in_section.load()) usleep(100);
  pthread_attr_t a;
  pthread_attr_init(&a);
  pthread_attr_setstacksize(&a, 64 * 1024);
  std::vector<pthread_t> ts;
  for (int i = 0; i < 1100; ++i) {
    pthread_t t;
    if (pthread_create(&t, &a, holder, nullptr) != 0) break;
    ts.push_back(t);
  }
  while (g_ready.load() < static_cast<int>(ts.size())) usleep(1000);
  pthread_t f;
  pthread_create(&f, &a, forker, nullptr);
  pthread_join(f, nullptr);
  CHECK(g_result == 0);
  CHECK(fork_and_wait() == 0);  // main thread: has a slot; the sitter is in a section
  close(g_pipe[1]);
  for (pthread_t t : ts) pthread_join(t, nullptr);
  g_leave.store(true);
  pthread_join(s, nullptr);
  pthread_attr_destroy(&a);
  r.deallocate(g_b);
}
