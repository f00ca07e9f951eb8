// Fault injection: every mmap and madvise the allocator issues through its OS
// layer fails in turn, with each errno the kernel uses for them. The caller
// gets std::bad_alloc (the heap: nullptr and a reason), nothing leaks, and the
// same resource keeps working afterwards.
#include <doctest/doctest.h>

#include <errno.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <new>
#include <vector>

#include "allocator/dropalloc.h"
#include "allocator/os/fake_os.h"
#include "tests/forwarding_os.h"
#include "tests/hardening/util.h"

using dropalloc::block_state;
using dropalloc::droppable_resource;

namespace {

// Wraps the fake OS: call number `fail_at` (counted from 1 over every kind of
// call) fails with `fail_errno`. Unmaps never fail: munmap of our own aligned
// ranges cannot, and nothing could be done about it.
class failing_os final : public dropalloc::testing::forwarding_os {
 public:
  failing_os() : forwarding_os(inner) {}
  dropalloc::os::fake_os inner;
  int fail_at = 0;
  int fail_errno = ENOMEM;
  int calls = 0;
  int failures = 0;
  int metadata_live = 0;

  bool fail_now() {
    if (++calls != fail_at) return false;
    ++failures;
    return true;
  }
  void* map_arena(std::size_t bytes, std::size_t alignment, int* err) noexcept override {
    if (fail_now()) {
      *err = fail_errno;
      return nullptr;
    }
    return inner.map_arena(bytes, alignment, err);
  }
  void* map_metadata(std::size_t bytes, int* err) noexcept override {
    if (fail_now()) {
      *err = fail_errno;
      return nullptr;
    }
    void* p = inner.map_metadata(bytes, err);
    if (p != nullptr) ++metadata_live;
    return p;
  }
  void unmap_metadata(void* p, std::size_t bytes) noexcept override {
    --metadata_live;
    inner.unmap_metadata(p, bytes);
  }
  int seal_pages(void* p, std::size_t bytes) noexcept override {
    return fail_now() ? fail_errno : inner.seal_pages(p, bytes);
  }
  int drop_pages(void* p, std::size_t bytes) noexcept override {
    return fail_now() ? fail_errno : inner.drop_pages(p, bytes);
  }
  int release_pages(void* p, std::size_t bytes) noexcept override {
    return fail_now() ? fail_errno : inner.release_pages(p, bytes);
  }
};

struct outcome {
  int bad_allocs = 0;
  int seal_not_intact = 0;
};

// Allocates every kind of block, seals, drops, checks and frees; a failed
// allocation is retried once (the injected failure is then past). Every
// block that exists is checked to hold what was written.
outcome workload(droppable_resource& res) {
  outcome o;
  struct blk {
    dropalloc::block_ref ref;
    std::size_t size;
    unsigned char tag;
  };
  std::vector<blk> blocks;
  const std::size_t sizes[] = {16, 100, 3000, 4096, 20000, 100000, 300000};
  const std::size_t aligns[] = {8, 16, 64, 4096, 8192, 1 << 23};
  for (int round = 0; round < 3; ++round) {
    for (std::size_t i = 0; i < 14; ++i) {
      std::size_t size = sizes[i % 7];
      std::size_t align = aligns[(i + static_cast<std::size_t>(round)) % 6];
      dropalloc::block_ref ref;
      try {
        ref = res.allocate_block(size, align);
      } catch (const std::bad_alloc&) {
        ++o.bad_allocs;
        ref = res.allocate_block(size, align);  // the retry must work
      }
      auto tag = static_cast<unsigned char>(blocks.size() + 1);
      std::memset(ref.ptr, tag, size);
      blocks.push_back({ref, size, tag});
    }
    for (std::size_t i = 0; i < blocks.size(); i += 2) {
      // A failed MADV_FREE only loses the eviction order: still intact.
      if (res.seal(blocks[i].ref) != block_state::intact) ++o.seal_not_intact;
    }
    res.seal_all();
    // Drop one page of the first block: detected unless the drop call itself
    // was the one that failed (then nothing was zeroed and it stays intact).
    // A block with pages of its own, so the drop hits nothing else.
    blk& victim = *std::find_if(blocks.begin(), blocks.end(), [](const blk& b) { return b.size >= 4096; });
    int rc = res.drop_for_testing(victim.ref.ptr, 1);
    block_state s = res.check(victim.ref.ptr, victim.ref.generation);
    CHECK(s == (rc == 0 ? block_state::dropped : block_state::intact));
    std::memset(victim.ref.ptr, victim.tag, victim.size);
    res.seal_rewritten(victim.ref);  // all of it rewritten: revive it if dropped (a new generation)
    for (auto& b : blocks) {
      auto* p = static_cast<unsigned char*>(b.ref.ptr);
      bool ok = p[0] == b.tag && p[b.size - 1] == b.tag && p[b.size / 2] == b.tag;
      CHECK(ok);
      block_state st = res.check(b.ref.ptr, b.ref.generation);
      CHECK((st == block_state::intact || st == block_state::dropped));
    }
    // Free half, so later rounds reuse blocks, arenas and transfer caches.
    for (std::size_t i = 0; i < blocks.size(); i += 2) res.deallocate(blocks[i].ref.ptr, blocks[i].size, 1);
    std::vector<blk> rest;
    for (std::size_t i = 1; i < blocks.size(); i += 2) rest.push_back(blocks[i]);
    blocks.swap(rest);
    res.trim();
  }
  for (auto& b : blocks) res.deallocate(b.ref.ptr, b.size, 1);
  return o;
}

}  // namespace

TEST_CASE("each OS call failing in turn: bad_alloc, no leak, the resource keeps working") {
  {
    // The process-wide address-to-arena table maps a leaf for every 32 GiB
    // of address space the first time an arena lands there, and keeps it:
    // let a resource on a fake OS, whose arenas land where those of the
    // fakes below will (a real resource's go elsewhere), map it now so the
    // counts below cover only our calls.
    dropalloc::os::fake_os warm_os;
    dropalloc::resource_options warm_opts;
    warm_opts.os = &warm_os;
    droppable_resource warm(warm_opts);
    warm.deallocate(warm.allocate(8), 8);
  }
  int total_calls = 0;
  {
    failing_os os;
    dropalloc::resource_options opts;
    opts.os = &os;
    opts.empty_arena_decay_ms = 0;
    {
      droppable_resource res(opts);
      workload(res);
    }
    total_calls = os.calls;
    CHECK(os.inner.arena_bytes_mapped == 0);
    CHECK(os.metadata_live == 0);
  }
  REQUIRE(total_calls > 20);
  for (int err : {ENOMEM, EINVAL, EAGAIN}) {
    int bad_allocs = 0, seals_failed = 0;
    for (int n = 1; n <= total_calls; ++n) {
      CAPTURE(err);
      CAPTURE(n);
      failing_os os;
      os.fail_at = n;
      os.fail_errno = err;
      dropalloc::resource_options opts;
      opts.os = &os;
      opts.empty_arena_decay_ms = 0;
      opts.thread_cache = n % 2 == 0;  // both the cached and the uncached paths
      {
        droppable_resource res(opts);
        outcome o = workload(res);
        bad_allocs += o.bad_allocs;
        seals_failed += o.seal_not_intact;
        CHECK(res.stats().blocks_live == 0);
        CHECK(res.stats().misuse_refused == 0);
      }
      CHECK(os.failures <= 1);
      CHECK(os.inner.arena_bytes_mapped == 0);  // every arena mapped was unmapped
      CHECK(os.metadata_live == 0);             // and all its metadata
    }
    CHECK(bad_allocs > 0);
    CHECK(seals_failed == 0);
  }
}

TEST_CASE("the heap reports a failed mapping as nullptr and a reason") {
  failing_os os;
  dropalloc::core::heap_options opts;
  opts.os = &os;
  dropalloc::core::heap h(opts);
  for (std::size_t size : {std::size_t{64}, std::size_t{50000}, std::size_t{1} << 21}) {
    CAPTURE(size);
    os.fail_at = os.calls + 1;
    auto err = dropalloc::core::alloc_error::none;
    // A metadata or arena mapping (whichever comes first) fails.
    void* p = h.allocate(size, 16, &err);
    if (p == nullptr) {
      CHECK(err == dropalloc::core::alloc_error::out_of_memory);
      p = h.allocate(size, 16, &err);
    }
    REQUIRE(p != nullptr);
    h.deallocate(p);
  }
}

TEST_CASE("the real kernel refusing memory (RLIMIT_AS): bad_alloc, then work resumes") {
  if (hardening::kSanitized) {
    MESSAGE("skipped under ASan/TSan: their runtimes need address space of their own");
    return;
  }
  fflush(nullptr);
  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    droppable_resource res;
    void* warm = res.allocate(64);  // arenas for 64 B exist before the limit
    rlimit old{};
    getrlimit(RLIMIT_AS, &old);
    rlimit tight = old;
    tight.rlim_cur = 0;  // below what is mapped: every new mapping fails
    setrlimit(RLIMIT_AS, &tight);
    int code = 0;
    try {
      (void)res.allocate(std::size_t{64} << 20);
      code |= 1;
    } catch (const dropalloc::allocation_error& e) {
      if (e.reason() != dropalloc::core::alloc_error::out_of_memory) code |= 2;
    }
    try {
      (void)res.allocate(20000);  // a new arena for this class
      code |= 4;
    } catch (const std::bad_alloc&) {
    }
    void* again = res.allocate(64);  // the existing arena still serves
    setrlimit(RLIMIT_AS, &old);
    void* big = res.allocate(std::size_t{64} << 20);
    std::memset(big, 1, 4096);
    res.deallocate(big, std::size_t{64} << 20);
    res.deallocate(again, 64);
    res.deallocate(warm, 64);
    _exit(code);
  }
  int status = 0;
  REQUIRE(waitpid(pid, &status, 0) == pid);
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
}
