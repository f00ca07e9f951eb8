// Every operator new/delete form through the preloaded shim: alignment,
// bad_alloc, nothrow, and the new-handler loop.
#include <dlfcn.h>
#include <doctest/doctest.h>

#include <cstdint>
#include <cstdlib>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include "allocator/dropalloc_c.h"

namespace {

bool shim_active() {
  auto active = reinterpret_cast<int (*)()>(dlsym(RTLD_DEFAULT, "dropalloc_shim_active"));
  return active != nullptr && active() == 1;
}

// A size no allocator can satisfy, hidden from the optimiser.
std::size_t huge() {
  volatile std::size_t n = std::size_t{1} << 60;
  return n;
}

int g_handler_calls = 0;
void counting_handler() {
  if (++g_handler_calls == 3) std::set_new_handler(nullptr);  // then new throws
}
void throwing_handler() {
  ++g_handler_calls;
  throw std::bad_alloc();
}

struct alignas(256) over_aligned {
  unsigned char bytes[300];
};

}  // namespace

TEST_CASE("the shim is the process's allocator") {
  const char* require = std::getenv("DROPALLOC_TEST_REQUIRE_SHIM");
  if (require != nullptr && require[0] == '1') REQUIRE(shim_active());
}

TEST_CASE("plain, array, sized and aligned forms round-trip") {
  for (std::size_t n : {std::size_t{0}, std::size_t{1}, std::size_t{24}, std::size_t{4096},
                        std::size_t{70000}, std::size_t{1} << 20}) {
    void* p = ::operator new(n);
    CHECK(reinterpret_cast<std::uintptr_t>(p) % (n <= 8 ? 8 : 16) == 0);
    ::operator delete(p, n);
    p = ::operator new[](n);
    ::operator delete[](p, n);
    p = ::operator new(n, std::nothrow);
    CHECK(p != nullptr);
    ::operator delete(p, std::nothrow);
    p = ::operator new[](n, std::nothrow);
    CHECK(p != nullptr);
    ::operator delete[](p, std::nothrow);
    for (std::size_t a = 32; a <= (std::size_t{1} << 16); a *= 8) {
      auto al = static_cast<std::align_val_t>(a);
      p = ::operator new(n, al);
      CHECK(reinterpret_cast<std::uintptr_t>(p) % a == 0);
      ::operator delete(p, n, al);
      p = ::operator new[](n, al);
      CHECK(reinterpret_cast<std::uintptr_t>(p) % a == 0);
      ::operator delete[](p, al);
      p = ::operator new(n, al, std::nothrow);
      CHECK(reinterpret_cast<std::uintptr_t>(p) % a == 0);
      ::operator delete(p, al, std::nothrow);
      p = ::operator new[](n, al, std::nothrow);
      CHECK(reinterpret_cast<std::uintptr_t>(p) % a == 0);
      ::operator delete[](p, n, al);
    }
  }
  auto v = std::make_unique<over_aligned[]>(5);
  CHECK(reinterpret_cast<std::uintptr_t>(v.get()) % 256 == 0);
  std::vector<std::string> strings;
  for (int i = 0; i < 10000; ++i) strings.push_back(std::string(static_cast<std::size_t>(i % 200), 'x'));
  CHECK(strings[199].size() == 199);
}

TEST_CASE("failure: bad_alloc, nullptr from nothrow, and the new-handler loop") {
  CHECK_THROWS_AS(static_cast<void>(::operator new(huge())), std::bad_alloc);
  CHECK_THROWS_AS(static_cast<void>(::operator new[](huge(), std::align_val_t{64})), std::bad_alloc);
  CHECK(::operator new(huge(), std::nothrow) == nullptr);
  CHECK(::operator new[](huge(), std::align_val_t{128}, std::nothrow) == nullptr);

  g_handler_calls = 0;
  std::set_new_handler(counting_handler);
  CHECK_THROWS_AS(static_cast<void>(::operator new(huge())), std::bad_alloc);
  CHECK(g_handler_calls == 3);

  g_handler_calls = 0;
  std::set_new_handler(throwing_handler);
  CHECK(::operator new(huge(), std::nothrow) == nullptr);
  CHECK(g_handler_calls == 1);
  CHECK(::operator new[](huge(), std::align_val_t{64}, std::nothrow) == nullptr);
  CHECK(g_handler_calls == 2);

  // The nothrow forms run the handler loop too: three calls, then nullptr.
  g_handler_calls = 0;
  std::set_new_handler(counting_handler);
  CHECK(::operator new[](huge(), std::nothrow) == nullptr);
  CHECK(g_handler_calls == 3);
  g_handler_calls = 0;
  std::set_new_handler(counting_handler);
  CHECK(::operator new(huge(), std::align_val_t{256}, std::nothrow) == nullptr);
  CHECK(g_handler_calls == 3);
  std::set_new_handler(nullptr);
}
