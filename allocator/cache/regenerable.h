// Regenerable values: a value kept in droppable memory together with the means
// to rebuild it. Access hands the visitor either the value known intact or a
// freshly rebuilt one, never torn data.
//
//   dropalloc::regenerable<std::pmr::vector<std::pmr::string>> words(
//       [](std::pmr::memory_resource* mr) {
//         std::pmr::vector<std::pmr::string> v(mr);   // build with the given resource
//         v.emplace_back("decoded");
//         return v;
//       });
//   std::size_t n = words.visit([](const auto& v) { return v.size(); });
//
// The visitor runs under the safe read protocol: its result counts only if the
// object is still intact afterwards; otherwise the object is rebuilt and the
// visitor runs again. So a visitor must return values, never references or
// pointers into the object, and must tolerate reading zeros (null pointers,
// empty sizes) if a page goes while it runs: pmr vectors, strings and hash
// maps do; walking a std::map whose node was zeroed under it does not.
// The check before each visit also marks the object's pages referenced, which
// makes the kernel pass them over in its next reclaim scan.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <memory_resource>
#include <mutex>
#include <new>
#include <shared_mutex>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

#include "allocator/cache/object_arena.h"
#include "allocator/pmr/droppable_resource.h"

namespace dropalloc {

// Thrown when a value was lost again every time it was rebuilt.
class regenerate_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct regenerable_options {
  // Builds one access may do before giving up with regenerate_error.
  int max_builds = 4;
  // First chunk of an object's arena; chunks double up to 64 KiB.
  std::size_t first_chunk = 512;
};

// What one access did, for callers that keep statistics.
struct access_outcome {
  std::uint32_t builds = 0;  // builder calls that completed
  std::uint32_t drops = 0;   // losses detected (before, during or right after a build)
  std::uint64_t build_ns = 0;
};

struct regenerable_stats {
  std::uint64_t builds = 0, drops = 0, build_ns = 0;
};

// The resource used when none is given: one per process, never destroyed, so
// that regenerable objects with static storage duration can outlive main.
inline droppable_resource& default_regenerable_resource() {
  static droppable_resource* res = new droppable_resource();
  return *res;
}

namespace detail {

inline std::uint64_t now_ns() {
  return static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                        std::chrono::steady_clock::now().time_since_epoch())
                                        .count());
}

[[noreturn]] inline void give_up(int builds) {
  throw regenerate_error("dropalloc: value rebuilt " + std::to_string(builds) +
                         " times and lost each time before it could be read");
}

// The access loop of every regenerable kind: the safe read protocol plus
// single-flight rebuilds. Under the shared lock: check, visit, check again,
// and only then does the visitor's result count (checking first also keeps a
// loss found earlier from reaching the visitor). On a loss, take the
// exclusive lock and rebuild, unless another thread rebuilt meanwhile (the
// epoch moved), in which case read that. `intact()` and `visit()` run under
// the shared lock, `rebuild()` under the exclusive one; `epoch` changes only
// under the exclusive lock.
template <class R, class Intact, class Visit, class Rebuild>
R access_loop(std::shared_mutex& mu, const std::uint64_t& epoch, int max_builds, Intact&& intact,
              Visit&& visit, Rebuild&& rebuild) {
  int builds = 0;
  for (;;) {
    std::uint64_t seen;
    {
      std::shared_lock lock(mu);
      seen = epoch;
      if (intact()) {
        if constexpr (std::is_void_v<R>) {
          visit();
          if (intact()) return;
        } else {
          R r = visit();
          if (intact()) return r;
        }
      }
    }
    std::unique_lock lock(mu);
    if (epoch != seen) continue;
    if (builds == max_builds) give_up(builds);
    ++builds;
    rebuild();
  }
}

}  // namespace detail

// An object of type T, and everything it allocates, in droppable memory from a
// private arena. A builder `T(std::pmr::memory_resource*)` makes it in ordinary
// staging memory (pmr containers constructed with the given resource propagate
// it to nested pmr members); the library then copies it into the arena with
// uses-allocator construction, seals the arena and verifies it. The copy's
// destructor never runs: a lost object is abandoned and its arena reclaimed
// wholesale. So T must be allocator-aware (std::pmr containers, or classes with
// allocator_type and allocator-extended copy) or trivially copyable: anything
// else could own memory outside the arena, which would leak.
//
// Thread-safe: concurrent visits share the object; one rebuild at a time, and
// visitors that found the same loss wait for that rebuild instead of repeating it.
template <class T>
class regenerable {
 public:
  static_assert(std::uses_allocator_v<T, std::pmr::polymorphic_allocator<>> ||
                    std::is_trivially_copyable_v<T>,
                "T must be allocator-aware (pmr) or trivially copyable: its destructor never runs");
  using builder_fn = std::function<T(std::pmr::memory_resource*)>;

  explicit regenerable(builder_fn build, const regenerable_options& options = {})
      : regenerable(default_regenerable_resource(), std::move(build), options) {}
  regenerable(droppable_resource& resource, builder_fn build, const regenerable_options& options = {})
      : res_(&resource), build_(std::move(build)), options_(options) {}
  // Without a builder of its own: every access passes one (visit_with).
  explicit regenerable(droppable_resource& resource, const regenerable_options& options = {})
      : res_(&resource), options_(options) {}
  ~regenerable() = default;  // the arena goes back wholesale; ~T is not run
  regenerable(const regenerable&) = delete;
  regenerable& operator=(const regenerable&) = delete;

  // Runs f(const T&) on an intact object and returns its result.
  template <class F>
  auto visit(F&& f) {
    return visit_with(build_, std::forward<F>(f));
  }

  template <class B, class F>
  auto visit_with(B&& build, F&& f, access_outcome* out = nullptr)
      -> std::invoke_result_t<F&, const T&> {
    using R = std::invoke_result_t<F&, const T&>;
    static_assert(!std::is_reference_v<R>,
                  "a visitor must return a value: a reference into the object can go stale");
    access_outcome local;
    access_outcome& o = out != nullptr ? *out : local;
    return detail::access_loop<R>(
        mu_, epoch_, options_.max_builds, [&] { return intact_locked(); },
        [&] { return f(std::as_const(*obj_)); }, [&] { rebuild_locked(build, o); });
  }

  // Abandons the object now; the next access rebuilds it.
  void reset() {
    std::unique_lock lock(mu_);
    abandon_locked();
    ++epoch_;
  }

  // Whether an object is held and still intact (a hint: it can go any time).
  bool intact() {
    std::shared_lock lock(mu_);
    return intact_locked();
  }
  // Droppable bytes held by the object's arena.
  std::size_t bytes() const {
    std::shared_lock lock(mu_);
    return arena_ ? arena_->bytes() : 0;
  }
  regenerable_stats stats() const {
    return {builds_.load(std::memory_order_relaxed), drops_.load(std::memory_order_relaxed),
            build_ns_.load(std::memory_order_relaxed)};
  }

 private:
  bool intact_locked() { return obj_ != nullptr && arena_->intact(); }

  void abandon_locked() noexcept {
    obj_ = nullptr;
    arena_.reset();
  }

  template <class B>
  void rebuild_locked(B& build, access_outcome& o) {
    if (obj_ != nullptr) {  // lost since it was built
      drops_.fetch_add(1, std::memory_order_relaxed);
      ++o.drops;
    }
    abandon_locked();
    ++epoch_;
    T* obj = nullptr;
    auto arena = std::make_unique<object_arena>(*res_, options_.first_chunk);
    std::uint64_t t0 = detail::now_ns();
    bool whole;
    {
      // The builder works in ordinary memory: containers re-read the pointers
      // they wrote while they grow, and a droppable page can read as zeros at
      // any moment (mlock does not pin MAP_DROPPABLE pages), so building in
      // place could crash the builder. The copy below only writes droppable
      // memory, apart from each element's allocator read back by its own
      // constructor a few instructions after storing it.
      std::pmr::monotonic_buffer_resource staging(std::pmr::new_delete_resource());
      T staged = std::invoke(build, static_cast<std::pmr::memory_resource*>(&staging));
      void* mem = arena->allocate(sizeof(T), alignof(T));
      if constexpr (std::uses_allocator_v<T, std::pmr::polymorphic_allocator<>>) {
        T copy = std::make_obj_using_allocator<T>(std::pmr::polymorphic_allocator<>(arena.get()),
                                                  std::as_const(staged));
        ::new (mem) T(std::move(copy));  // the top-level object, moved in last
      } else {
        ::new (mem) T(std::as_const(staged));
      }
      obj = static_cast<T*>(mem);
      whole = arena->seal();
    }
    std::uint64_t ns = detail::now_ns() - t0;
    builds_.fetch_add(1, std::memory_order_relaxed);
    build_ns_.fetch_add(ns, std::memory_order_relaxed);
    ++o.builds;
    o.build_ns += ns;
    if (!whole) {  // a page went while it was being built or sealed
      drops_.fetch_add(1, std::memory_order_relaxed);
      ++o.drops;
      return;  // `arena` goes back; the caller's loop builds again
    }
    arena_ = std::move(arena);
    obj_ = obj;
  }

  droppable_resource* res_;
  builder_fn build_;
  regenerable_options options_;
  mutable std::shared_mutex mu_;
  std::unique_ptr<object_arena> arena_;  // guarded by mu_
  T* obj_ = nullptr;                     // in arena_, or null
  std::uint64_t epoch_ = 0;              // bumped by every rebuild and reset
  std::atomic<std::uint64_t> builds_{0}, drops_{0}, build_ns_{0};
};

// Bytes kept in one block of a droppable_resource. The builder returns the
// bytes in ordinary memory (std::string, std::vector<char>, ...); they are
// copied in, sealed and compared with the original before it is let go, which
// also closes the window where a page lost before sealing would go unnoticed.
// Thread-safe like regenerable<T>.
class regenerable_bytes {
 public:
  explicit regenerable_bytes(droppable_resource& resource, const regenerable_options& options = {})
      : res_(&resource), options_(options) {}
  ~regenerable_bytes() { release_locked(); }
  regenerable_bytes(const regenerable_bytes&) = delete;
  regenerable_bytes& operator=(const regenerable_bytes&) = delete;

  // Runs f(std::string_view) on intact bytes and returns its result.
  template <class B, class F>
  auto visit_with(B&& build, F&& f, access_outcome* out = nullptr)
      -> std::invoke_result_t<F&, std::string_view> {
    using R = std::invoke_result_t<F&, std::string_view>;
    static_assert(!std::is_reference_v<R>,
                  "a visitor must return a value: a reference into the bytes can go stale");
    access_outcome local;
    access_outcome& o = out != nullptr ? *out : local;
    return detail::access_loop<R>(
        mu_, epoch_, options_.max_builds, [&] { return held_ && intact_locked(); },
        [&] { return f(std::string_view(static_cast<const char*>(ref_.ptr), size_)); },
        [&] { rebuild_locked(build, o); });
  }

  template <class B>
  std::string get(B&& build, access_outcome* out = nullptr) {
    return visit_with(build, [](std::string_view v) { return std::string(v); }, out);
  }

  void reset() {
    std::unique_lock lock(mu_);
    release_locked();
    ++epoch_;
  }
  bool intact() {
    std::shared_lock lock(mu_);
    return held_ && intact_locked();
  }
  std::size_t bytes() const {
    std::shared_lock lock(mu_);
    return held_ && ref_.ptr != nullptr ? res_->usable_size(ref_.ptr) : 0;
  }

 private:
  bool intact_locked() noexcept { return ref_.ptr == nullptr || res_->is_intact(ref_); }

  void release_locked() noexcept {
    if (ref_.ptr != nullptr) res_->deallocate(ref_.ptr, size_);
    ref_ = {};
    size_ = 0;
    held_ = false;
  }

  template <class B>
  void rebuild_locked(B& build, access_outcome& o) {
    if (held_) {
      ++o.drops;
      drops_.fetch_add(1, std::memory_order_relaxed);
    }
    release_locked();
    ++epoch_;
    std::uint64_t t0 = detail::now_ns();
    auto value = std::invoke(build);
    std::string_view src(value);
    o.build_ns += detail::now_ns() - t0;
    ++o.builds;
    // The source is still in hand: a copy lost while being written and sealed
    // is copied again rather than rebuilt.
    for (int copy = 0; copy < options_.max_builds; ++copy) {
      if (src.empty()) break;
      block_ref ref = res_->allocate_block(src.size(), 8);
      std::memcpy(ref.ptr, src.data(), src.size());
      if (res_->seal(ref.ptr) == block_state::intact &&
          std::memcmp(ref.ptr, src.data(), src.size()) == 0) {
        ref_ = ref;
        break;
      }
      ++o.drops;
      drops_.fetch_add(1, std::memory_order_relaxed);
      res_->deallocate(ref.ptr, src.size());
    }
    if (!src.empty() && ref_.ptr == nullptr) return;  // lost every copy: the caller retries
    size_ = src.size();
    held_ = true;
  }

  droppable_resource* res_;
  regenerable_options options_;
  mutable std::shared_mutex mu_;
  block_ref ref_;          // guarded by mu_; null for an empty value
  std::size_t size_ = 0;
  bool held_ = false;
  std::uint64_t epoch_ = 0;
  std::atomic<std::uint64_t> drops_{0};
};

}  // namespace dropalloc
