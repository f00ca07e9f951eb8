// Held: allocation and free in every phase of a thread's exit, while other
// threads trim() and destroy resources (release_spare_tables racing
// retire_table and new_table). Each thread takes its first allocation in a
// different place: its body, a thread_local destructor (the object made
// without allocating), or a key destructor in round 1, 2 or 3; then it
// allocates and frees in every later phase up to round 4, handing blocks to
// later threads through a mailbox. Checked: every block whole and distinct,
// blocks_live exact, nothing refused, the spare list consistent at every
// look (count = length <= 4, spare_resident_bytes = sum of kept_resident <=
// 1 MiB, no underflow), no table left on the registry and every arena
// handed back by trim() at the end.
#include <doctest/doctest.h>

#include <pthread.h>

#include <atomic>
#include <cstring>
#include <memory>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include "allocator/dropalloc.h"
#include "tests/attack30/common.h"

using dropalloc::droppable_resource;
namespace core = dropalloc::core;

namespace {

struct tagged {
  unsigned char* p;
  std::size_t size;
  unsigned char tag;
};

droppable_resource* g_res = nullptr;
pthread_key_t g_key;
std::mutex g_lock;
std::vector<tagged> g_mail;  // blocks handed from exiting threads to later ones
std::atomic<int> g_bad{0};
std::atomic<unsigned> g_seq{0};

// What a thread does where it allocates: keep a few blocks in the mailbox,
// free a few others (possibly another thread's).
void exchange(int n) {
  std::vector<tagged> got;
  for (int i = 0; i < n; ++i) {
    const unsigned s = g_seq.fetch_add(1, std::memory_order_relaxed);
    const std::size_t size = 8 + (s * 40) % 1500;
    tagged t{static_cast<unsigned char*>(g_res->allocate(size, 8)), size, static_cast<unsigned char>(s % 251 + 1)};
    std::memset(t.p, t.tag, t.size);
    got.push_back(t);
  }
  std::vector<tagged> out;
  {
    std::lock_guard<std::mutex> g(g_lock);
    for (int i = 0; i < n && g_mail.size() > 64; ++i) {
      out.push_back(g_mail.front());
      g_mail.erase(g_mail.begin());
    }
    g_mail.insert(g_mail.end(), got.begin(), got.end());
  }
  for (const tagged& t : out) {
    for (std::size_t i = 0; i < t.size; ++i) {
      if (t.p[i] != t.tag) {
        g_bad.fetch_add(1);
        break;
      }
    }
    g_res->deallocate(t.p, t.size, 8);
  }
}

// The round whose key destructor makes the thread's first allocation (0:
// the body, -1: a thread_local destructor).
thread_local int t_first = 0;
thread_local int t_round = 0;

void key_destructor(void*) {
  ++t_round;
  if (t_round >= t_first) exchange(4);  // the first allocation if t_round == t_first
  if (t_round < 4) pthread_setspecific(g_key, reinterpret_cast<void*>(1));
}

struct late {
  bool armed = false;
  ~late() {
    if (armed) exchange(6);
  }
};
thread_local late t_late;

void thread_body(int first) {
  t_first = first;
  t_late.armed = first <= 0;  // constructed here, without allocating
  if (first == 0) exchange(8);
  pthread_setspecific(g_key, reinterpret_cast<void*>(1));
}

// The spare list, read under the registry lock.
bool spares_consistent() {
  auto& r = core::internal::registry();
  core::lock_guard g(r.lock);
  std::size_t n = 0, sum = 0;
  for (core::tc_table* t = r.spare_tables; t != nullptr; t = t->next) {
    ++n;
    sum += t->kept_resident;
  }
  return n == r.spare_count && n <= 4 && sum == r.spare_resident_bytes && sum <= (std::size_t{1} << 20);
}

}  // namespace

TEST_CASE("allocation in every phase of thread exit while trim() and resource destruction race") {
  droppable_resource res;
  g_res = &res;
  REQUIRE(pthread_key_create(&g_key, key_destructor) == 0);
  res.deallocate(res.allocate(64, 8), 64, 8);  // this thread's own table, made before the count
  const auto before = attack30::count_tables();
  std::atomic<bool> stop{false};
  std::atomic<int> inconsistent{0};
  std::atomic<long> looks{0};
  // Trims, and makes, uses and destroys resources: each destruction and
  // trim() releases the spare tables.
  std::thread churn([&] {
    while (!stop.load(std::memory_order_relaxed)) {
      {
        auto other = std::make_unique<droppable_resource>();
        other->deallocate(other->allocate(64, 8), 64, 8);
      }
      res.trim();
      if (!spares_consistent()) inconsistent.fetch_add(1);
      looks.fetch_add(1);
    }
  });
  const int waves = attack30::kSlow ? 60 : 250;
  for (int w = 0; w < waves; ++w) {
    std::vector<std::thread> ts;
    for (int t = 0; t < 6; ++t) ts.emplace_back(thread_body, (w + t) % 5 - 1);  // -1 .. 3
    for (auto& t : ts) t.join();
  }
  stop = true;
  churn.join();
  CHECK(g_bad.load() == 0);
  CHECK(inconsistent.load() == 0);
  CHECK(spares_consistent());
  std::set<unsigned char*> seen;
  for (const tagged& t : g_mail) CHECK(seen.insert(t.p).second);
  CHECK(res.stats().blocks_live == g_mail.size());
  for (const tagged& t : g_mail) res.deallocate(t.p, t.size, 8);
  g_mail.clear();
  res.trim();
  const auto st = res.stats();
  const auto after = attack30::count_tables();
  MESSAGE(looks.load() << " looks at the spare list; " << after.live << " tables on the registry (" << before.live
                       << " before), " << after.spare << " spare");
  CHECK(st.blocks_live == 0);
  CHECK(st.misuse_refused == 0);
  CHECK(st.arenas_mapped == 0);
  CHECK(after.live == before.live);
  CHECK(after.tags_in_use == before.tags_in_use);
  pthread_key_delete(g_key);
  g_res = nullptr;
}
