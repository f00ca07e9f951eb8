// Regenerable values: a value kept in droppable memory together with the means
// to rebuild it. An access hands the visitor a private copy of the value,
// known to be exactly what was stored, or a freshly rebuilt one.
//
//   dropalloc::regenerable<std::pmr::vector<std::pmr::string>> words(
//       [](std::pmr::memory_resource* mr) {
//         std::pmr::vector<std::pmr::string> v(mr);   // built in ordinary memory
//         v.emplace_back("decoded");
//         return v;
//       });
//   std::size_t n = words.visit([](const auto& v) { return v.size(); });
//
// Why values are kept as flat bytes. A droppable page can turn into zeros at
// any instant and nothing pins it. An object holding pointers (a vector of
// strings, a map) that lives in such pages can make any code walking it, or
// destroying it, follow a zeroed pointer; and a page dropped while the object
// was being copied in can come back partly rewritten, torn, yet with a live
// witness. So droppable memory only ever holds a value's bytes, never a live
// object:
//   - store: the builder runs in ordinary memory; its result is encoded into
//     ordinary bytes (flat_codec), copied into one block, sealed, compared
//     with the source and checked. Only a block that passed all of that is
//     kept, so a page torn or dropped at any moment before the compare can
//     never be certified, and one dropped after it has a witness.
//   - read: the bytes are copied into ordinary memory first, then the block
//     is checked; a page dropped during the copy zeroes its witness, so the
//     check catches it. Only then is the copy decoded (in ordinary memory)
//     and the visitor run on it, after every lock is released. The visitor
//     never touches droppable memory: it cannot fault and cannot see torn
//     data, whatever it does and whenever pages go.
// The cost is a copy (and, for non-trivial types, a decode) per access.
//
// Accepted value types are those with a flat_codec: trivially copyable types,
// std::basic_string, std::vector, std::map and std::pair of accepted types
// (std::pmr ones included, whose private copies are built on a resource in
// ordinary memory), and any type given a flat_codec specialization.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <memory_resource>
#include <mutex>
#include <new>
#include <optional>
#include <shared_mutex>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "allocator/pmr/droppable_resource.h"

namespace dropalloc {

// Thrown when a value was lost again every time it was rebuilt.
class regenerate_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The moments of storing and reading a value, for tests that drop pages at
// exactly those moments (regenerable_options::on_step).
enum class value_step : std::uint8_t {
  copying_in,   // part of the bytes written into the block (offset: bytes so far)
  written,      // all bytes written, not sealed yet
  sealed,       // sealed, not compared with the source yet
  compared,     // compared equal, not checked yet
  copying_out,  // part of the bytes copied out (offset: bytes so far)
  copied_out,   // all bytes copied out, not checked yet
};

struct regenerable_options {
  // Builds one access may do before giving up with regenerate_error. Also the
  // number of times one build's bytes are copied in before that build counts
  // as lost.
  int max_builds = 4;
  // Tests: called at each step of storing and reading a value with the block
  // (its start and size) and the bytes done so far. When set, copies go in
  // pieces of half a page with a call after each. Empty: no calls.
  std::function<void(value_step, std::byte* block, std::size_t size, std::size_t offset)> on_step;
};

// What one access did, for callers that keep statistics.
struct access_outcome {
  std::uint32_t builds = 0;          // builder calls that completed
  std::uint32_t build_failures = 0;  // builder calls that threw
  std::uint32_t drops = 0;           // losses detected (when read, or while being stored)
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

// ---- Flat encoding ---------------------------------------------------------

// Appends a value's bytes to ordinary memory.
class flat_writer {
 public:
  explicit flat_writer(std::string& out) : out_(&out) {}
  void put(const void* p, std::size_t n) { out_->append(static_cast<const char*>(p), n); }
  void put_size(std::size_t n) {
    std::uint64_t v = n;
    put(&v, sizeof v);
  }

 private:
  std::string* out_;
};

// Reads bytes that were verified intact (so they are exactly what a
// flat_writer produced; the reader still never reads past the end).
class flat_reader {
 public:
  flat_reader(const std::byte* p, std::size_t n) : p_(p), left_(n) {}
  void get(void* dst, std::size_t n) {
    if (n > left_) throw std::length_error("dropalloc: flat value shorter than its encoding says");
    std::memcpy(dst, p_, n);
    p_ += n;
    left_ -= n;
  }
  std::size_t get_size() {
    std::uint64_t v;
    get(&v, sizeof v);
    if (v > left_) throw std::length_error("dropalloc: flat value shorter than its encoding says");
    return static_cast<std::size_t>(v);
  }
  std::size_t left() const { return left_; }

 private:
  const std::byte* p_;
  std::size_t left_;
};

// How a value of type T is turned into bytes and back. Specialize it for your
// own types:
//   template <> struct dropalloc::flat_codec<my_type> {
//     static void encode(const my_type& v, dropalloc::flat_writer& w);
//     static my_type decode(dropalloc::flat_reader& r, std::pmr::memory_resource* mr);
//   };
// decode() builds the private copy a visitor gets; allocator-aware types
// should allocate from mr (ordinary memory, released after the visit).
template <class T>
struct flat_codec {};  // no encode/decode: T is not accepted

template <class T>
concept flat_value = requires(const T& v, flat_writer& w, flat_reader& r, std::pmr::memory_resource* mr) {
  flat_codec<T>::encode(v, w);
  { flat_codec<T>::decode(r, mr) } -> std::same_as<T>;
};

namespace detail {

// A pointer or a type that merely views other memory would be stored as an
// address, which says nothing about what it points to.
template <class T>
inline constexpr bool is_view_v = std::is_pointer_v<T> || std::is_member_pointer_v<T>;
template <class C, class Tr>
inline constexpr bool is_view_v<std::basic_string_view<C, Tr>> = true;

template <class T>
inline constexpr bool flat_bytes_v = std::is_trivially_copyable_v<T> && !is_view_v<T>;

// An empty T, on mr when T is allocator-aware.
template <class T>
T make_empty(std::pmr::memory_resource* mr) {
  if constexpr (std::uses_allocator_v<T, std::pmr::polymorphic_allocator<>>) {
    return std::make_obj_using_allocator<T>(std::pmr::polymorphic_allocator<>(mr));
  } else {
    return T();
  }
}

}  // namespace detail

template <class T>
  requires detail::flat_bytes_v<T>
struct flat_codec<T> {
  static void encode(const T& v, flat_writer& w) { w.put(&v, sizeof v); }
  static T decode(flat_reader& r, std::pmr::memory_resource*) {
    // Copying the bytes into suitably aligned storage creates the object
    // (trivially copyable types are implicit-lifetime types).
    alignas(T) std::byte buf[sizeof(T)];
    r.get(buf, sizeof buf);
    return *std::launder(reinterpret_cast<T*>(buf));
  }
};

template <class C, class Tr, class A>
  requires detail::flat_bytes_v<C>
struct flat_codec<std::basic_string<C, Tr, A>> {
  using S = std::basic_string<C, Tr, A>;
  static void encode(const S& s, flat_writer& w) {
    w.put_size(s.size());
    w.put(s.data(), s.size() * sizeof(C));
  }
  static S decode(flat_reader& r, std::pmr::memory_resource* mr) {
    S s = detail::make_empty<S>(mr);
    std::size_t n = r.get_size();  // characters, as encode() wrote it
    if (n > r.left() / sizeof(C)) throw std::length_error("dropalloc: flat value shorter than its encoding says");
    s.resize(n);
    r.get(s.data(), n * sizeof(C));
    return s;
  }
};

template <class E, class A>
  requires flat_value<E>
struct flat_codec<std::vector<E, A>> {
  using V = std::vector<E, A>;
  static void encode(const V& v, flat_writer& w) {
    w.put_size(v.size());
    if constexpr (detail::flat_bytes_v<E>) {
      w.put(v.data(), v.size() * sizeof(E));
    } else {
      for (const E& e : v) flat_codec<E>::encode(e, w);
    }
  }
  static V decode(flat_reader& r, std::pmr::memory_resource* mr) {
    V v = detail::make_empty<V>(mr);
    std::size_t n = r.get_size();
    v.reserve(n);
    for (std::size_t i = 0; i < n; ++i) v.push_back(flat_codec<E>::decode(r, mr));
    return v;
  }
};

template <class K, class M, class Cmp, class A>
  requires flat_value<K> && flat_value<M>
struct flat_codec<std::map<K, M, Cmp, A>> {
  using Map = std::map<K, M, Cmp, A>;
  static void encode(const Map& m, flat_writer& w) {
    w.put_size(m.size());
    for (const auto& [k, v] : m) {
      flat_codec<K>::encode(k, w);
      flat_codec<M>::encode(v, w);
    }
  }
  static Map decode(flat_reader& r, std::pmr::memory_resource* mr) {
    Map m = detail::make_empty<Map>(mr);
    std::size_t n = r.get_size();
    for (std::size_t i = 0; i < n; ++i) {
      K k = flat_codec<K>::decode(r, mr);
      M v = flat_codec<M>::decode(r, mr);
      m.emplace_hint(m.end(), std::move(k), std::move(v));  // encoded in order
    }
    return m;
  }
};

template <class X, class Y>
  requires flat_value<X> && flat_value<Y> && (!detail::flat_bytes_v<std::pair<X, Y>>)
struct flat_codec<std::pair<X, Y>> {
  static void encode(const std::pair<X, Y>& p, flat_writer& w) {
    flat_codec<X>::encode(p.first, w);
    flat_codec<Y>::encode(p.second, w);
  }
  static std::pair<X, Y> decode(flat_reader& r, std::pmr::memory_resource* mr) {
    X x = flat_codec<X>::decode(r, mr);
    Y y = flat_codec<Y>::decode(r, mr);
    return {std::move(x), std::move(y)};
  }
};

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

// Ordinary memory a read copies a value into. Buffers are kept per thread and
// reused (a visit must not cost an allocation); a visitor that reads another
// value gets a buffer of its own, so nested visits never share one.
class scratch {
 public:
  static constexpr std::size_t kAlign = 64;
  scratch(std::size_t n, std::size_t align) : size_(std::max<std::size_t>(n, 1)), align_(std::max(align, kAlign)) {
    auto& p = pool();
    if (align_ == kAlign) {
      for (std::size_t i = p.size(); i-- > 0;) {
        if (p[i].size >= size_) {
          buf_ = p[i];
          p.erase(p.begin() + static_cast<std::ptrdiff_t>(i));
          return;
        }
      }
    }
    buf_.size = size_;
    buf_.data = static_cast<std::byte*>(::operator new(size_, std::align_val_t{align_}));
  }
  ~scratch() {
    auto& p = pool();
    // Keep a few moderate buffers; give big or over-aligned ones back at once.
    if (align_ == kAlign && buf_.size <= kKeepBytes && p.size() < kKeepBuffers) {
      p.push_back(buf_);
    } else {
      ::operator delete(buf_.data, std::align_val_t{align_});
    }
  }
  scratch(const scratch&) = delete;
  scratch& operator=(const scratch&) = delete;
  std::byte* data() const noexcept { return buf_.data; }

 private:
  static constexpr std::size_t kKeepBytes = 1 << 20;
  static constexpr std::size_t kKeepBuffers = 4;
  struct buffer {
    std::byte* data = nullptr;
    std::size_t size = 0;
  };
  struct pool_t : std::vector<buffer> {
    ~pool_t() {
      for (buffer& b : *this) ::operator delete(b.data, std::align_val_t{kAlign});
    }
  };
  static pool_t& pool() {
    thread_local pool_t p;
    return p;
  }
  std::size_t size_, align_;
  buffer buf_;
};

// One block holding a value's bytes. Not synchronized: the owner serializes
// store/release (exclusive) against copy_out/intact (shared).
class sealed_block {
 public:
  bool held() const noexcept { return held_; }
  std::size_t size() const noexcept { return size_; }
  std::size_t bytes(droppable_resource& res) const noexcept {
    return held_ && ref_.ptr != nullptr ? res.usable_size(ref_.ptr) : 0;
  }

  // Copies n bytes of ordinary memory in, then seals, compares with the
  // source and checks; only a block that passed all of that is kept. A copy
  // that fails is freed and made again from the same source, up to
  // max_builds times. Returns whether the value is now held.
  bool store(droppable_resource& res, const void* src, std::size_t n, const regenerable_options& opt,
             access_outcome& o, std::atomic<std::uint64_t>& drops) {
    release(res);
    if (n == 0) {  // nothing to lose: no block
      held_ = true;
      return true;
    }
    for (int attempt = 0; attempt < std::max(opt.max_builds, 1); ++attempt) {
      block_ref ref = res.allocate_block(n, 16);
      if (write_seal_verify(res, ref, static_cast<const std::byte*>(src), n, opt)) {
        ref_ = ref;
        size_ = n;
        held_ = true;
        return true;
      }
      ++o.drops;
      drops.fetch_add(1, std::memory_order_relaxed);
      res.deallocate(ref.ptr, n);
    }
    return false;
  }

  // The safe read protocol: copy the bytes out, then check. True: dst holds
  // exactly what was stored.
  bool copy_out(droppable_resource& res, std::byte* dst, const regenerable_options& opt) noexcept {
    if (!held_) return false;
    if (size_ == 0) return true;
    auto* block = static_cast<std::byte*>(ref_.ptr);
    copy(dst, block, size_, opt, value_step::copying_out, block);
    step(opt, value_step::copied_out, block, size_, size_);
    return res.is_intact(ref_);
  }

  // copy_out into fresh scratch storage aligned to `align`: the copy, or
  // nullptr when nothing is held or the copy is not exactly what was stored.
  std::unique_ptr<scratch> copy_out_new(droppable_resource& res, std::size_t align,
                                        const regenerable_options& opt) {
    if (!held_) return nullptr;
    auto s = std::make_unique<scratch>(size_, align);
    if (!copy_out(res, s->data(), opt)) return nullptr;
    return s;
  }

  bool intact(droppable_resource& res) noexcept {
    return held_ && (size_ == 0 || res.is_intact(ref_));
  }

  void release(droppable_resource& res) noexcept {
    if (ref_.ptr != nullptr) res.deallocate(ref_.ptr, size_);
    ref_ = {};
    size_ = 0;
    held_ = false;
  }

 private:
  static void step(const regenerable_options& opt, value_step s, std::byte* block, std::size_t n,
                   std::size_t off) noexcept {
    if (opt.on_step) opt.on_step(s, block, n, off);
  }

  // memcpy, or in half pages with a test call after each when on_step is set.
  static void copy(std::byte* dst, const std::byte* src, std::size_t n, const regenerable_options& opt,
                   value_step s, std::byte* block) noexcept {
    if (!opt.on_step) {
      std::memcpy(dst, src, n);
      return;
    }
    constexpr std::size_t kPiece = 2048;
    for (std::size_t off = 0; off < n; off += kPiece) {
      std::size_t len = std::min(kPiece, n - off);
      std::memcpy(dst + off, src + off, len);
      step(opt, s, block, n, off + len);
    }
  }

  // The write_and_seal protocol, step by step so that each moment can be
  // tested: a page lost while it was written reads as zeros (or zeros and
  // later bytes: torn) and seal() would vouch for that, so the compare after
  // sealing is what certifies the contents; a page lost after the compare
  // had a witness recorded from the right contents, so the check (and every
  // later one) sees it.
  static bool write_seal_verify(droppable_resource& res, const block_ref& ref, const std::byte* src,
                                std::size_t n, const regenerable_options& opt) noexcept {
    auto* block = static_cast<std::byte*>(ref.ptr);
    copy(block, src, n, opt, value_step::copying_in, block);
    step(opt, value_step::written, block, n, n);
    if (res.seal(block) != block_state::intact) return false;
    step(opt, value_step::sealed, block, n, n);
    if (std::memcmp(block, src, n) != 0) return false;
    step(opt, value_step::compared, block, n, n);
    return res.is_intact(ref);
  }

  block_ref ref_;  // null for an empty value
  std::size_t size_ = 0;
  bool held_ = false;
};

// The access loop of every regenerable kind. Under the shared lock: copy the
// value out and check it (read). The result of read is then finished (decoded
// and visited) with no lock held, on the private copy. On a loss, take the
// exclusive lock and rebuild, unless another thread rebuilt meanwhile (the
// epoch moved), in which case read that one: concurrent accesses that found
// the same loss build once. `epoch` changes only under the exclusive lock.
template <class Read, class Rebuild>
auto access_loop(std::shared_mutex& mu, const std::uint64_t& epoch, int max_builds, Read&& read,
                 Rebuild&& rebuild) {
  int builds = 0;
  for (;;) {
    std::uint64_t seen;
    {
      std::shared_lock lock(mu);
      seen = epoch;
      if (auto copy = read()) return copy;
    }
    std::unique_lock lock(mu);
    if (epoch != seen) continue;
    if (builds == max_builds) give_up(builds);
    ++builds;
    rebuild();
  }
}

// Calls the builder, counting time and failures.
template <class B, class... Args>
auto run_builder(B& build, access_outcome& o, std::atomic<std::uint64_t>& builds,
                 std::atomic<std::uint64_t>& build_ns, Args&&... args) {
  std::uint64_t t0 = now_ns();
  try {
    auto value = std::invoke(build, std::forward<Args>(args)...);
    std::uint64_t ns = now_ns() - t0;
    ++o.builds;
    o.build_ns += ns;
    builds.fetch_add(1, std::memory_order_relaxed);
    build_ns.fetch_add(ns, std::memory_order_relaxed);
    return value;
  } catch (...) {
    ++o.build_failures;
    throw;
  }
}

}  // namespace detail

// A value of type T kept in droppable memory as flat bytes (see the top of
// this file), with a builder `T(std::pmr::memory_resource*)` to make it again.
// The builder runs in ordinary memory (the resource it gets is an ordinary
// staging resource; it may ignore it). Visitors get `const T&` to a private
// copy in ordinary memory that lives until the visitor returns.
//
// Thread-safe: concurrent visits share the stored bytes; one rebuild at a
// time, and accesses that found the same loss wait for that rebuild instead
// of repeating it. Visitors run with no lock held.
template <class T>
class regenerable {
  static_assert(flat_value<T>,
                "dropalloc::regenerable<T>: T must be storable as flat bytes: a trivially copyable "
                "type (not a pointer or view), std::(pmr::)string, std::(pmr::)vector, std::(pmr::)map "
                "or std::pair of such, or a type with a dropalloc::flat_codec specialization. "
                "Objects holding pointers are never placed in droppable memory: a page dropped "
                "under them could make a reader fault or see torn data.");
  static constexpr bool kRaw = detail::flat_bytes_v<T>;

 public:
  using builder_fn = std::function<T(std::pmr::memory_resource*)>;

  explicit regenerable(builder_fn build, const regenerable_options& options = {})
      : regenerable(default_regenerable_resource(), std::move(build), options) {}
  regenerable(droppable_resource& resource, builder_fn build, const regenerable_options& options = {})
      : res_(&resource), build_(std::move(build)), options_(options) {}
  // Without a builder of its own: every access passes one (visit_with).
  explicit regenerable(droppable_resource& resource, const regenerable_options& options = {})
      : res_(&resource), options_(options) {}
  ~regenerable() { block_.release(*res_); }
  regenerable(const regenerable&) = delete;
  regenerable& operator=(const regenerable&) = delete;

  // Runs f(const T&) on a private copy of the intact value and returns its result.
  template <class F>
  auto visit(F&& f) {
    return visit_with(build_, std::forward<F>(f));
  }

  template <class B, class F>
  auto visit_with(B&& build, F&& f, access_outcome* out = nullptr)
      -> std::invoke_result_t<F&, const T&> {
    using R = std::invoke_result_t<F&, const T&>;
    static_assert(!std::is_reference_v<R>,
                  "a visitor must return a value: the copy it sees is gone when it returns");
    access_outcome local;
    access_outcome& o = out != nullptr ? *out : local;
    // The copy is taken under the shared lock (a rebuild cannot free the
    // block meanwhile); decoding and the visitor run after it is released.
    std::size_t n = 0;
    std::unique_ptr<detail::scratch> copy = detail::access_loop(
        mu_, epoch_, options_.max_builds,
        [&] {
          n = block_.size();
          return block_.copy_out_new(*res_, alignof(T), options_);
        },
        [&] { rebuild_locked(build, o); });
    if constexpr (kRaw) {
      // The bytes were copied into storage aligned for T: that made a T.
      return f(*std::launder(reinterpret_cast<const T*>(copy->data())));
    } else {
      std::pmr::monotonic_buffer_resource mono(std::pmr::new_delete_resource());
      flat_reader r(copy->data(), n);
      const T value = flat_codec<T>::decode(r, &mono);
      return f(value);
    }
  }

  // Abandons the value now; the next access rebuilds it.
  void reset() {
    std::unique_lock lock(mu_);
    block_.release(*res_);
    ++epoch_;
  }

  // Whether a value is held and still intact (a hint: it can go any time).
  bool intact() {
    std::shared_lock lock(mu_);
    return block_.intact(*res_);
  }
  // Droppable bytes held by the value.
  std::size_t bytes() const {
    std::shared_lock lock(mu_);
    return block_.bytes(*res_);
  }
  regenerable_stats stats() const {
    return {builds_.load(std::memory_order_relaxed), drops_.load(std::memory_order_relaxed),
            build_ns_.load(std::memory_order_relaxed)};
  }

 private:
  template <class B>
  void rebuild_locked(B& build, access_outcome& o) {
    if (block_.held()) {  // lost since it was stored (reset() leaves nothing held)
      ++o.drops;
      drops_.fetch_add(1, std::memory_order_relaxed);
    }
    block_.release(*res_);
    ++epoch_;
    // Staging in ordinary memory: builders of containers re-read the
    // pointers they wrote while they grow.
    std::pmr::monotonic_buffer_resource staging(std::pmr::new_delete_resource());
    T staged = detail::run_builder(build, o, builds_, build_ns_, static_cast<std::pmr::memory_resource*>(&staging));
    if constexpr (kRaw) {
      block_.store(*res_, &staged, sizeof(T), options_, o, drops_);
    } else {
      std::string bytes;
      flat_writer w(bytes);
      flat_codec<T>::encode(staged, w);
      block_.store(*res_, bytes.data(), bytes.size(), options_, o, drops_);
    }
  }

  droppable_resource* res_;
  builder_fn build_;
  regenerable_options options_;
  mutable std::shared_mutex mu_;
  detail::sealed_block block_;  // guarded by mu_
  std::uint64_t epoch_ = 0;     // bumped by every rebuild and reset
  std::atomic<std::uint64_t> builds_{0}, drops_{0}, build_ns_{0};
};

// Bytes kept in one block of a droppable_resource, stored and read like a
// regenerable<T>'s. The builder returns the bytes in ordinary memory
// (std::string, std::vector<char>, anything convertible to std::string_view).
// Visitors get a std::string_view of a private copy, valid until they return.
// Thread-safe like regenerable<T>.
class regenerable_bytes {
 public:
  explicit regenerable_bytes(droppable_resource& resource, const regenerable_options& options = {})
      : res_(&resource), options_(options) {}
  ~regenerable_bytes() { block_.release(*res_); }
  regenerable_bytes(const regenerable_bytes&) = delete;
  regenerable_bytes& operator=(const regenerable_bytes&) = delete;

  // Runs f(std::string_view) on a private copy of the intact bytes and
  // returns its result.
  template <class B, class F>
  auto visit_with(B&& build, F&& f, access_outcome* out = nullptr)
      -> std::invoke_result_t<F&, std::string_view> {
    using R = std::invoke_result_t<F&, std::string_view>;
    static_assert(!std::is_reference_v<R>,
                  "a visitor must return a value: the copy it sees is gone when it returns");
    access_outcome local;
    access_outcome& o = out != nullptr ? *out : local;
    std::size_t n = 0;
    std::unique_ptr<detail::scratch> copy = detail::access_loop(
        mu_, epoch_, options_.max_builds,
        [&] {
          n = block_.size();
          return block_.copy_out_new(*res_, 1, options_);
        },
        [&] { rebuild_locked(build, o); });
    return f(std::string_view(reinterpret_cast<const char*>(copy->data()), n));
  }

  // A copy of the intact bytes (copied straight into the result, then checked).
  template <class B>
  std::string get(B&& build, access_outcome* out = nullptr) {
    access_outcome local;
    access_outcome& o = out != nullptr ? *out : local;
    return detail::access_loop(
        mu_, epoch_, options_.max_builds,
        [&]() -> std::optional<std::string> {
          if (!block_.held()) return std::nullopt;
          std::string s(block_.size(), '\0');
          if (!block_.copy_out(*res_, reinterpret_cast<std::byte*>(s.data()), options_)) return std::nullopt;
          return s;
        },
        [&] { rebuild_locked(build, o); }).value();
  }

  void reset() {
    std::unique_lock lock(mu_);
    block_.release(*res_);
    ++epoch_;
  }
  bool intact() {
    std::shared_lock lock(mu_);
    return block_.intact(*res_);
  }
  std::size_t bytes() const {
    std::shared_lock lock(mu_);
    return block_.bytes(*res_);
  }

 private:
  template <class B>
  void rebuild_locked(B& build, access_outcome& o) {
    if (block_.held()) {
      ++o.drops;
      drops_.fetch_add(1, std::memory_order_relaxed);
    }
    block_.release(*res_);
    ++epoch_;
    auto value = detail::run_builder(build, o, builds_, build_ns_);
    std::string_view src(value);
    block_.store(*res_, src.data(), src.size(), options_, o, drops_);
  }

  droppable_resource* res_;
  regenerable_options options_;
  mutable std::shared_mutex mu_;
  detail::sealed_block block_;  // guarded by mu_
  std::uint64_t epoch_ = 0;
  std::atomic<std::uint64_t> builds_{0}, drops_{0}, build_ns_{0};
};

}  // namespace dropalloc
