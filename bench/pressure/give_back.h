// How each malloc is asked to hand freed memory back to the kernel at once,
// which an adaptive cache must do after shrinking: otherwise the freed pages
// stay charged to the cgroup and the shrink relieves nobody. Found with dlsym,
// since the malloc is whichever the driver preloaded.
#pragma once

#include <dlfcn.h>
#include <malloc.h>

#include <cstring>

namespace pressure {

class give_back {
 public:
  // alloc: the name workload.h gives the malloc in use (glibc, jemalloc, ...).
  explicit give_back(const char* alloc) {
    if (std::strcmp(alloc, "jemalloc") == 0) {
      mallctl_ = reinterpret_cast<mallctl_fn>(dlsym(RTLD_DEFAULT, "mallctl"));
      if (mallctl_ != nullptr) name_ = "mallctl(arena.4096.purge)";
    } else if (std::strcmp(alloc, "mimalloc") == 0) {
      collect_ = reinterpret_cast<collect_fn>(dlsym(RTLD_DEFAULT, "mi_collect"));
      if (collect_ != nullptr) name_ = "mi_collect(true)";
    } else if (std::strcmp(alloc, "tcmalloc") == 0) {
      release_ = reinterpret_cast<release_fn>(dlsym(RTLD_DEFAULT, "MallocExtension_ReleaseFreeMemory"));
      if (release_ != nullptr) name_ = "MallocExtension_ReleaseFreeMemory()";
    } else if (std::strcmp(alloc, "glibc") == 0) {
      name_ = "malloc_trim(0)";
    }
  }

  void operator()() const {
    // 4096 is MALLCTL_ARENAS_ALL: purge the unused dirty pages of every arena.
    if (mallctl_ != nullptr) mallctl_("arena.4096.purge", nullptr, nullptr, nullptr, 0);
    else if (collect_ != nullptr) collect_(true);
    else if (release_ != nullptr) release_();
    else if (std::strcmp(name_, "malloc_trim(0)") == 0) malloc_trim(0);
  }
  const char* name() const noexcept { return name_; }

 private:
  using mallctl_fn = int (*)(const char*, void*, std::size_t*, void*, std::size_t);
  using collect_fn = void (*)(bool);
  using release_fn = void (*)();
  mallctl_fn mallctl_ = nullptr;
  collect_fn collect_ = nullptr;
  release_fn release_ = nullptr;
  const char* name_ = "none";
};

}  // namespace pressure
