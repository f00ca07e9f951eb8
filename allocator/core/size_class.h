// Size classes: the constexpr table every allocation is rounded to.
//
// Shape: 8-byte steps up to 64 B, then eight classes per doubling up to the
// largest class, 256 KiB, except just above 4 KiB: 64-byte steps from 4 KiB
// to 4.5 KiB. "A page plus a small header" (a database page and its
// bookkeeping, a 4 KiB buffer and its length) is among the commonest larger
// requests, and the next class at 512 B steps would waste up to 11% of each
// (sqlite3 asks for 4,104 and 4,368 bytes by the thousand; glibc serves them
// with 8 to 16 bytes over). Only that far: with 64-byte steps all the way to
// 8 KiB (64 classes there), a program whose sizes spread over that range had
// its blocks spread over as many arenas and thread-cache bins, each partly
// used (bench/macro/rptest: 37 MiB resident instead of 28, and a quarter
// slower). Larger requests get a mapping of their own. Blocks of a class sit back to back in their arena
// (block i at base + i * size), so a block may share a page with its
// neighbours and straddle page boundaries: no page tail, no rounding to pages. The drop check keeps a witness for every
// page a block touches (core/types.h, struct segment). Classes up to 4 KiB
// ("small") take the allocate and free fast paths.
//
// Waste: "worst waste" is what a request one byte above the previous class
// loses: <= 12.5% from 64 B up; below 64 B the 8-byte granule (witness words
// are 8-byte aligned) bounds it to 7 B.
// tests/size_class_test.cc checks all of this exhaustively.
//
// Metadata per block (ordinary memory, in the arena's metadata mapping, sized
// by the arena's capacity; arenas grow with use, see core/types.h):
//   * 1 state byte and 1 free bit, touched by every allocate and free;
//   * one 8-byte meta word (generation, witness), reserved for every block but
//     written, so resident, only once a block's generation is observed
//     (allocate_block, generation(), seal): never for plain malloc or pmr use.
// Per 4 KiB page of an arena, whatever the class: 2 bytes of witness and 4 of
// seal count for the block crossing into it (written only when one is sealed).
// So a class of size S costs 1.125 / S resident per byte for plain use and
// at most 9.125 / S + 0.15% once every block is observed: 8 B 14% / 114%,
// 64 B 1.8% / 14%, 512 B 0.22% / 1.9%, 4 KiB 0.03% / 0.37%.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>

namespace dropalloc::core {

inline constexpr std::size_t kPage = 4096;
inline constexpr std::size_t kMaxSmallSize = 4096;       // largest class of the fine lookup table
inline constexpr std::size_t kMaxCachedSize = 64 * 1024;  // largest class thread caches hold
inline constexpr std::size_t kMaxClassSize = 256 * 1024;  // larger: a mapping of its own
inline constexpr std::size_t kMaxCacheableAlign = 4096;  // larger alignments: own mapping
inline constexpr std::size_t kLargeGranule = 64;         // class spacing from 4 to 8 KiB

struct size_class_row {
  std::uint32_t size;
};

// clang-format off
inline constexpr std::array<size_class_row, 111> kSizeClasses{{
    {      8},  //   0: worst waste     7 B = 87.5%
    {     16},  //   1: worst waste     7 B = 43.8%
    {     24},  //   2: worst waste     7 B = 29.2%
    {     32},  //   3: worst waste     7 B = 21.9%
    {     40},  //   4: worst waste     7 B = 17.5%
    {     48},  //   5: worst waste     7 B = 14.6%
    {     56},  //   6: worst waste     7 B = 12.5%
    {     64},  //   7: worst waste     7 B = 10.9%
    {     72},  //   8: worst waste     7 B =  9.7%
    {     80},  //   9: worst waste     7 B =  8.8%
    {     88},  //  10: worst waste     7 B =  8.0%
    {     96},  //  11: worst waste     7 B =  7.3%
    {    104},  //  12: worst waste     7 B =  6.7%
    {    112},  //  13: worst waste     7 B =  6.2%
    {    120},  //  14: worst waste     7 B =  5.8%
    {    128},  //  15: worst waste     7 B =  5.5%
    {    144},  //  16: worst waste    15 B = 10.4%
    {    160},  //  17: worst waste    15 B =  9.4%
    {    176},  //  18: worst waste    15 B =  8.5%
    {    192},  //  19: worst waste    15 B =  7.8%
    {    208},  //  20: worst waste    15 B =  7.2%
    {    224},  //  21: worst waste    15 B =  6.7%
    {    240},  //  22: worst waste    15 B =  6.2%
    {    256},  //  23: worst waste    15 B =  5.9%
    {    288},  //  24: worst waste    31 B = 10.8%
    {    320},  //  25: worst waste    31 B =  9.7%
    {    352},  //  26: worst waste    31 B =  8.8%
    {    384},  //  27: worst waste    31 B =  8.1%
    {    416},  //  28: worst waste    31 B =  7.5%
    {    448},  //  29: worst waste    31 B =  6.9%
    {    480},  //  30: worst waste    31 B =  6.5%
    {    512},  //  31: worst waste    31 B =  6.1%
    {    576},  //  32: worst waste    63 B = 10.9%
    {    640},  //  33: worst waste    63 B =  9.8%
    {    704},  //  34: worst waste    63 B =  8.9%
    {    768},  //  35: worst waste    63 B =  8.2%
    {    832},  //  36: worst waste    63 B =  7.6%
    {    896},  //  37: worst waste    63 B =  7.0%
    {    960},  //  38: worst waste    63 B =  6.6%
    {   1024},  //  39: worst waste    63 B =  6.2%
    {   1152},  //  40: worst waste   127 B = 11.0%
    {   1280},  //  41: worst waste   127 B =  9.9%
    {   1408},  //  42: worst waste   127 B =  9.0%
    {   1536},  //  43: worst waste   127 B =  8.3%
    {   1664},  //  44: worst waste   127 B =  7.6%
    {   1792},  //  45: worst waste   127 B =  7.1%
    {   1920},  //  46: worst waste   127 B =  6.6%
    {   2048},  //  47: worst waste   127 B =  6.2%
    {   2304},  //  48: worst waste   255 B = 11.1%
    {   2560},  //  49: worst waste   255 B = 10.0%
    {   2816},  //  50: worst waste   255 B =  9.1%
    {   3072},  //  51: worst waste   255 B =  8.3%
    {   3328},  //  52: worst waste   255 B =  7.7%
    {   3584},  //  53: worst waste   255 B =  7.1%
    {   3840},  //  54: worst waste   255 B =  6.6%
    {   4096},  //  55: worst waste   255 B =  6.2%
    {   4160},  //  56: worst waste    63 B =  1.5%
    {   4224},  //  57: worst waste    63 B =  1.5%
    {   4288},  //  58: worst waste    63 B =  1.5%
    {   4352},  //  59: worst waste    63 B =  1.4%
    {   4416},  //  60: worst waste    63 B =  1.4%
    {   4480},  //  61: worst waste    63 B =  1.4%
    {   4544},  //  62: worst waste    63 B =  1.4%
    {   4608},  //  63: worst waste    63 B =  1.4%
    {   5120},  //  64: worst waste   511 B = 10.0%
    {   5632},  //  65: worst waste   511 B =  9.1%
    {   6144},  //  66: worst waste   511 B =  8.3%
    {   6656},  //  67: worst waste   511 B =  7.7%
    {   7168},  //  68: worst waste   511 B =  7.1%
    {   7680},  //  69: worst waste   511 B =  6.7%
    {   8192},  //  70: worst waste   511 B =  6.2%
    {   9216},  //  71: worst waste  1023 B = 11.1%
    {  10240},  //  72: worst waste  1023 B = 10.0%
    {  11264},  //  73: worst waste  1023 B =  9.1%
    {  12288},  //  74: worst waste  1023 B =  8.3%
    {  13312},  //  75: worst waste  1023 B =  7.7%
    {  14336},  //  76: worst waste  1023 B =  7.1%
    {  15360},  //  77: worst waste  1023 B =  6.7%
    {  16384},  //  78: worst waste  1023 B =  6.2%
    {  18432},  //  79: worst waste  2047 B = 11.1%
    {  20480},  //  80: worst waste  2047 B = 10.0%
    {  22528},  //  81: worst waste  2047 B =  9.1%
    {  24576},  //  82: worst waste  2047 B =  8.3%
    {  26624},  //  83: worst waste  2047 B =  7.7%
    {  28672},  //  84: worst waste  2047 B =  7.1%
    {  30720},  //  85: worst waste  2047 B =  6.7%
    {  32768},  //  86: worst waste  2047 B =  6.2%
    {  36864},  //  87: worst waste  4095 B = 11.1%
    {  40960},  //  88: worst waste  4095 B = 10.0%
    {  45056},  //  89: worst waste  4095 B =  9.1%
    {  49152},  //  90: worst waste  4095 B =  8.3%
    {  53248},  //  91: worst waste  4095 B =  7.7%
    {  57344},  //  92: worst waste  4095 B =  7.1%
    {  61440},  //  93: worst waste  4095 B =  6.7%
    {  65536},  //  94: worst waste  4095 B =  6.2%
    {  73728},  //  95: worst waste  8191 B = 11.1%
    {  81920},  //  96: worst waste  8191 B = 10.0%
    {  90112},  //  97: worst waste  8191 B =  9.1%
    {  98304},  //  98: worst waste  8191 B =  8.3%
    { 106496},  //  99: worst waste  8191 B =  7.7%
    { 114688},  // 100: worst waste  8191 B =  7.1%
    { 122880},  // 101: worst waste  8191 B =  6.7%
    { 131072},  // 102: worst waste  8191 B =  6.2%
    { 147456},  // 103: worst waste 16383 B = 11.1%
    { 163840},  // 104: worst waste 16383 B = 10.0%
    { 180224},  // 105: worst waste 16383 B =  9.1%
    { 196608},  // 106: worst waste 16383 B =  8.3%
    { 212992},  // 107: worst waste 16383 B =  7.7%
    { 229376},  // 108: worst waste 16383 B =  7.1%
    { 245760},  // 109: worst waste 16383 B =  6.7%
    { 262144},  // 110: worst waste 16383 B =  6.2%
}};
// clang-format on

inline constexpr std::size_t kNumClasses = kSizeClasses.size();
inline constexpr std::size_t kNumSmallClasses = 56;  // classes with size <= kMaxSmallSize

constexpr bool is_small_class(std::size_t cls) { return cls < kNumSmallClasses; }

// Alignment every block of the class has: its lowest set bit, capped at a page
// (block i sits at base + i * size, and arenas are page-aligned).
constexpr std::size_t class_alignment(std::size_t cls) {
  std::size_t s = kSizeClasses[cls].size;
  std::size_t a = s & (~s + 1);
  return a > kPage ? kPage : a;
}

namespace detail {
constexpr bool table_is_valid() {
  std::size_t prev = 0;
  for (std::size_t i = 0; i < kNumClasses; ++i) {
    std::size_t s = kSizeClasses[i].size;
    if (s <= prev || s % 8 != 0) return false;
    if ((i < kNumSmallClasses) != (s <= kMaxSmallSize)) return false;
    std::size_t worst = s - (prev + 1);
    bool ok = (s <= 64 && worst <= 7) || worst * 8 <= s;  // <= 12.5%
    if (!ok) return false;
    // Above 4 KiB every class is a multiple of the large lookup's granule.
    if (s > kMaxSmallSize && s % kLargeGranule != 0) return false;
    prev = s;
  }
  return prev == kMaxClassSize;
}
}  // namespace detail
static_assert(detail::table_is_valid(), "size-class table breaks its stated waste bounds");
static_assert(kSizeClasses[kNumSmallClasses - 1].size == kMaxSmallSize);

// Lookup tables built at compile time: class for a size rounded up to 8 bytes
// (small sizes), separately for alignment <= 8 and for alignment 16 (what
// memory_resource::allocate(n) asks for by default).
namespace detail {
template <std::size_t Align>
constexpr std::array<std::uint8_t, kMaxSmallSize / 8 + 1> make_small_lookup() {
  std::array<std::uint8_t, kMaxSmallSize / 8 + 1> t{};
  std::size_t cls = 0;  // monotone in g, so one pass over the table suffices
  for (std::size_t g = 0; g <= kMaxSmallSize / 8; ++g) {
    std::size_t need = g * 8;
    while (kSizeClasses[cls].size < need) ++cls;
    std::size_t fit = cls;
    while (kSizeClasses[fit].size % Align != 0) ++fit;
    t[g] = static_cast<std::uint8_t>(fit);
  }
  return t;
}
// Above 4 KiB: the class for a size rounded up to kLargeGranule bytes.
constexpr std::array<std::uint8_t, kMaxClassSize / kLargeGranule + 1> make_large_lookup() {
  std::array<std::uint8_t, kMaxClassSize / kLargeGranule + 1> t{};
  std::size_t cls = kNumSmallClasses - 1;
  for (std::size_t g = 0; g <= kMaxClassSize / kLargeGranule; ++g) {
    while (kSizeClasses[cls].size < g * kLargeGranule) ++cls;
    t[g] = static_cast<std::uint8_t>(cls);
  }
  return t;
}
inline constexpr auto kLookup8 = make_small_lookup<8>();
inline constexpr auto kLookup16 = make_small_lookup<16>();
inline constexpr auto kLargeLookup = make_large_lookup();
}  // namespace detail

inline constexpr std::size_t kNoClass = ~std::size_t{0};

// The smallest class that holds `size` bytes at `alignment` (a power of two),
// or kNoClass when the request needs a mapping of its own.
constexpr std::size_t class_for(std::size_t size, std::size_t alignment) {
  // No class for an alignment that is not a power of two (0 included: the
  // search below divides by it); the callers' slow paths report it.
  if (alignment == 0 || (alignment & (alignment - 1)) != 0) return kNoClass;
  if (size == 0) size = 1;
  if (alignment > kMaxCacheableAlign || size > kMaxClassSize) return kNoClass;
  std::size_t cls;
  if (size <= kMaxSmallSize) {
    std::size_t g = (size + 7) / 8;
    if (alignment <= 8) return detail::kLookup8[g];
    if (alignment == 16) return detail::kLookup16[g];
    cls = detail::kLookup8[g];
  } else {
    cls = detail::kLargeLookup[(size + kLargeGranule - 1) / kLargeGranule];
  }
  // Blocks are aligned to their size's lowest set bit: the first class that
  // is a multiple of the alignment (every multiple of 4 KiB is one).
  while (cls < kNumClasses && kSizeClasses[cls].size % alignment != 0) ++cls;
  return cls;
}

static_assert(class_for(1, 1) == 0 && class_for(8, 8) == 0 && class_for(9, 8) == 1);
static_assert(class_for(24, 16) == 3 && class_for(4096, 4096) == kNumSmallClasses - 1);
static_assert(class_for(4097, 8) == kNumSmallClasses && class_for(kMaxClassSize, 8) == kNumClasses - 1);
static_assert(class_for(kMaxClassSize + 1, 8) == kNoClass && class_for(8, 8192) == kNoClass);
static_assert(class_for(8192, 0) == kNoClass && class_for(8192, 24) == kNoClass && class_for(24, 0) == kNoClass);

// The fast paths' lookup: one load for a request of up to kMaxCachedSize bytes
// aligned to at most 16 (row 0 of the small table serves alignments 1-8, row 1
// alignment 16; above kMaxSmallSize every class is a multiple of 64, so the
// 64-byte table serves both). Anything else, size 0 included, gets kNoClass
// and goes to the slow path, which asks class_for.
namespace detail {
inline constexpr std::array<std::array<std::uint8_t, kMaxSmallSize / 8 + 1>, 2> kLookupByAlign = {
    kLookup8, kLookup16};
static_assert(kSizeClasses[kNumSmallClasses].size % kLargeGranule == 0 && kLargeGranule % 16 == 0);
// Classes above kMaxSmallSize, for a size from kMaxSmallSize + 1 to
// kMaxCachedSize: the large table, whose class is a multiple of 16.
constexpr std::size_t cached_class_above_small(std::size_t size) {
  return kLargeLookup[(size + kLargeGranule - 1) / kLargeGranule];
}
}  // namespace detail
constexpr std::size_t small_class_for(std::size_t size, std::size_t alignment) {
  // alignment - 1 >= 16 also catches 0; the slow path reports bad alignments.
  if (alignment - 1 >= 16 || (alignment & (alignment - 1)) != 0) return kNoClass;
  if (size - 1 < kMaxSmallSize) return detail::kLookupByAlign[alignment >> 4][(size + 7) >> 3];
  if (size - 1 < kMaxCachedSize) return detail::cached_class_above_small(size);
  return kNoClass;
}

// malloc's lookup: small_class_for(size, size <= 8 ? 8 : 16) with one table
// for small sizes, so the shim's fast path computes no alignment. Size 0 and
// sizes above kMaxCachedSize get kNoClass (the slow path).
namespace detail {
inline constexpr auto kMallocLookup = [] {
  std::array<std::uint8_t, kMaxSmallSize / 8 + 1> t = kLookup16;
  t[1] = kLookup8[1];  // up to 8 bytes need only 8-byte alignment
  return t;
}();
}  // namespace detail
constexpr std::size_t malloc_class_for(std::size_t size) {
  if (size - 1 < kMaxSmallSize) return detail::kMallocLookup[(size + 7) >> 3];
  if (size - 1 < kMaxCachedSize) return detail::cached_class_above_small(size);
  return kNoClass;
}

namespace detail {
constexpr bool small_lookup_agrees() {
  for (std::size_t align = 1; align <= 32; align *= 2) {
    for (std::size_t size = 0; size <= kMaxSmallSize + 1; ++size) {
      std::size_t fast = small_class_for(size, align);
      if (fast != kNoClass && fast != class_for(size, align)) return false;
      if (fast == kNoClass && size >= 1 && size <= kMaxSmallSize && align <= 16) return false;
    }
  }
  // Alignments that are no power of two never take the fast path.
  for (std::size_t align = 0; align <= 32; ++align) {
    if (align != 0 && (align & (align - 1)) == 0) continue;
    for (std::size_t size : {0, 1, 8, 24, 100, 4096}) {
      if (small_class_for(size, align) != kNoClass) return false;
    }
  }
  for (std::size_t size = 0; size <= kMaxSmallSize + 1; ++size) {
    if (malloc_class_for(size) != small_class_for(size, size <= 8 ? 8 : 16)) return false;
  }
  // Above the small table, at every class's edges (tests/size_class_test.cc
  // checks every size): the class is class_for's at alignments up to 16.
  for (std::size_t cls = kNumSmallClasses - 1; cls < kNumClasses; ++cls) {
    const std::size_t edge = kSizeClasses[cls].size;
    for (std::size_t size : {edge - 1, edge, edge + 1}) {
      for (std::size_t align = 1; align <= 16; align *= 2) {
        const std::size_t want = size <= kMaxCachedSize ? class_for(size, align) : kNoClass;
        if (small_class_for(size, align) != want) return false;
      }
      if (malloc_class_for(size) != small_class_for(size, 16)) return false;
    }
  }
  return true;
}
}  // namespace detail
static_assert(detail::small_lookup_agrees(), "fast class lookup disagrees with class_for");

}  // namespace dropalloc::core
