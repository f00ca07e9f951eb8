// Size classes: the constexpr table every allocation is rounded to.
//
// Shape: 8-byte steps up to 64 B, then eight classes per doubling up to 4 KiB
// ("small" classes: many blocks per 4 KiB page, never straddling a page), then
// whole-page classes up to 256 KiB (page-aligned "multi-page" blocks). Larger
// requests get a mapping of their own.
//
// Waste: "worst waste" is what a request one byte above the previous class
// loses. Eight classes per doubling keep it <= 12.5% from 64 B to 4 KiB and
// from 32 KiB up. Two granules bound it elsewhere, both forced by the design:
//   * below 64 B, the 8-byte granule (witness words are 8-byte aligned): <= 7 B;
//   * from 4 to 32 KiB, the page granule (multi-page blocks are page-aligned so
//     a dropped page belongs to exactly one block): < 4 KiB. Pages a caller never
//     writes are never faulted in, so the waste is virtual except in the last
//     touched page.
// The "page tail" of a small class is the unusable end of each 4 KiB page.
// tests/size_class_test.cc checks all of this exhaustively.
//
// Metadata per block (ordinary memory, in the arena's metadata mapping, sized
// by the arena's capacity; arenas grow with use, see core/types.h):
//   * 1 state byte and 1 free bit, touched by every allocate and free;
//   * one 8-byte meta word (generation, witness), reserved for every block but
//     written, so resident, only once a block's generation is observed
//     (allocate_block, generation(), seal): never for plain malloc or pmr use;
//   * multi-page blocks also: 2 bytes of witness per page, 4 bytes of seal count.
// So a class of size S costs 1.125 / S resident per byte for plain use and
// at most 9.125 / S once every block is observed: 8 B 14% / 114%, 64 B 1.8% /
// 14%, 512 B 0.22% / 1.8%, 4 KiB 0.03% / 0.22%; a 64 KiB block 0.07% at most.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>

namespace dropalloc::core {

inline constexpr std::size_t kPage = 4096;
inline constexpr std::size_t kMaxSmallSize = 4096;       // largest class packed within a page
inline constexpr std::size_t kMaxClassSize = 256 * 1024;  // larger: a mapping of its own
inline constexpr std::size_t kMaxCacheableAlign = 4096;  // larger alignments: own mapping

struct size_class_row {
  std::uint32_t size;
};

// clang-format off
inline constexpr std::array<size_class_row, 87> kSizeClasses{{
    {      8},  //  0: worst waste     7 B = 87.5%; 512 per page, page tail    0 B
    {     16},  //  1: worst waste     7 B = 43.8%; 256 per page, page tail    0 B
    {     24},  //  2: worst waste     7 B = 29.2%; 170 per page, page tail   16 B
    {     32},  //  3: worst waste     7 B = 21.9%; 128 per page, page tail    0 B
    {     40},  //  4: worst waste     7 B = 17.5%; 102 per page, page tail   16 B
    {     48},  //  5: worst waste     7 B = 14.6%;  85 per page, page tail   16 B
    {     56},  //  6: worst waste     7 B = 12.5%;  73 per page, page tail    8 B
    {     64},  //  7: worst waste     7 B = 10.9%;  64 per page, page tail    0 B
    {     72},  //  8: worst waste     7 B =  9.7%;  56 per page, page tail   64 B
    {     80},  //  9: worst waste     7 B =  8.8%;  51 per page, page tail   16 B
    {     88},  // 10: worst waste     7 B =  8.0%;  46 per page, page tail   48 B
    {     96},  // 11: worst waste     7 B =  7.3%;  42 per page, page tail   64 B
    {    104},  // 12: worst waste     7 B =  6.7%;  39 per page, page tail   40 B
    {    112},  // 13: worst waste     7 B =  6.2%;  36 per page, page tail   64 B
    {    120},  // 14: worst waste     7 B =  5.8%;  34 per page, page tail   16 B
    {    128},  // 15: worst waste     7 B =  5.5%;  32 per page, page tail    0 B
    {    144},  // 16: worst waste    15 B = 10.4%;  28 per page, page tail   64 B
    {    160},  // 17: worst waste    15 B =  9.4%;  25 per page, page tail   96 B
    {    176},  // 18: worst waste    15 B =  8.5%;  23 per page, page tail   48 B
    {    192},  // 19: worst waste    15 B =  7.8%;  21 per page, page tail   64 B
    {    208},  // 20: worst waste    15 B =  7.2%;  19 per page, page tail  144 B
    {    224},  // 21: worst waste    15 B =  6.7%;  18 per page, page tail   64 B
    {    240},  // 22: worst waste    15 B =  6.2%;  17 per page, page tail   16 B
    {    256},  // 23: worst waste    15 B =  5.9%;  16 per page, page tail    0 B
    {    288},  // 24: worst waste    31 B = 10.8%;  14 per page, page tail   64 B
    {    320},  // 25: worst waste    31 B =  9.7%;  12 per page, page tail  256 B
    {    352},  // 26: worst waste    31 B =  8.8%;  11 per page, page tail  224 B
    {    384},  // 27: worst waste    31 B =  8.1%;  10 per page, page tail  256 B
    {    416},  // 28: worst waste    31 B =  7.5%;   9 per page, page tail  352 B
    {    448},  // 29: worst waste    31 B =  6.9%;   9 per page, page tail   64 B
    {    480},  // 30: worst waste    31 B =  6.5%;   8 per page, page tail  256 B
    {    512},  // 31: worst waste    31 B =  6.1%;   8 per page, page tail    0 B
    {    576},  // 32: worst waste    63 B = 10.9%;   7 per page, page tail   64 B
    {    640},  // 33: worst waste    63 B =  9.8%;   6 per page, page tail  256 B
    {    704},  // 34: worst waste    63 B =  8.9%;   5 per page, page tail  576 B
    {    768},  // 35: worst waste    63 B =  8.2%;   5 per page, page tail  256 B
    {    832},  // 36: worst waste    63 B =  7.6%;   4 per page, page tail  768 B
    {    896},  // 37: worst waste    63 B =  7.0%;   4 per page, page tail  512 B
    {    960},  // 38: worst waste    63 B =  6.6%;   4 per page, page tail  256 B
    {   1024},  // 39: worst waste    63 B =  6.2%;   4 per page, page tail    0 B
    {   1152},  // 40: worst waste   127 B = 11.0%;   3 per page, page tail  640 B
    {   1280},  // 41: worst waste   127 B =  9.9%;   3 per page, page tail  256 B
    {   1408},  // 42: worst waste   127 B =  9.0%;   2 per page, page tail 1280 B
    {   1536},  // 43: worst waste   127 B =  8.3%;   2 per page, page tail 1024 B
    {   1664},  // 44: worst waste   127 B =  7.6%;   2 per page, page tail  768 B
    {   1792},  // 45: worst waste   127 B =  7.1%;   2 per page, page tail  512 B
    {   1920},  // 46: worst waste   127 B =  6.6%;   2 per page, page tail  256 B
    {   2048},  // 47: worst waste   127 B =  6.2%;   2 per page, page tail    0 B
    {   2304},  // 48: worst waste   255 B = 11.1%;   1 per page, page tail 1792 B
    {   2560},  // 49: worst waste   255 B = 10.0%;   1 per page, page tail 1536 B
    {   2816},  // 50: worst waste   255 B =  9.1%;   1 per page, page tail 1280 B
    {   3072},  // 51: worst waste   255 B =  8.3%;   1 per page, page tail 1024 B
    {   3328},  // 52: worst waste   255 B =  7.7%;   1 per page, page tail  768 B
    {   3584},  // 53: worst waste   255 B =  7.1%;   1 per page, page tail  512 B
    {   3840},  // 54: worst waste   255 B =  6.6%;   1 per page, page tail  256 B
    {   4096},  // 55: worst waste   255 B =  6.2%;   1 per page, page tail    0 B
    {   8192},  // 56: worst waste  4095 B = 50.0%;   2 pages
    {  12288},  // 57: worst waste  4095 B = 33.3%;   3 pages
    {  16384},  // 58: worst waste  4095 B = 25.0%;   4 pages
    {  20480},  // 59: worst waste  4095 B = 20.0%;   5 pages
    {  24576},  // 60: worst waste  4095 B = 16.7%;   6 pages
    {  28672},  // 61: worst waste  4095 B = 14.3%;   7 pages
    {  32768},  // 62: worst waste  4095 B = 12.5%;   8 pages
    {  36864},  // 63: worst waste  4095 B = 11.1%;   9 pages
    {  40960},  // 64: worst waste  4095 B = 10.0%;  10 pages
    {  45056},  // 65: worst waste  4095 B =  9.1%;  11 pages
    {  49152},  // 66: worst waste  4095 B =  8.3%;  12 pages
    {  53248},  // 67: worst waste  4095 B =  7.7%;  13 pages
    {  57344},  // 68: worst waste  4095 B =  7.1%;  14 pages
    {  61440},  // 69: worst waste  4095 B =  6.7%;  15 pages
    {  65536},  // 70: worst waste  4095 B =  6.2%;  16 pages
    {  73728},  // 71: worst waste  8191 B = 11.1%;  18 pages
    {  81920},  // 72: worst waste  8191 B = 10.0%;  20 pages
    {  90112},  // 73: worst waste  8191 B =  9.1%;  22 pages
    {  98304},  // 74: worst waste  8191 B =  8.3%;  24 pages
    { 106496},  // 75: worst waste  8191 B =  7.7%;  26 pages
    { 114688},  // 76: worst waste  8191 B =  7.1%;  28 pages
    { 122880},  // 77: worst waste  8191 B =  6.7%;  30 pages
    { 131072},  // 78: worst waste  8191 B =  6.2%;  32 pages
    { 147456},  // 79: worst waste 16383 B = 11.1%;  36 pages
    { 163840},  // 80: worst waste 16383 B = 10.0%;  40 pages
    { 180224},  // 81: worst waste 16383 B =  9.1%;  44 pages
    { 196608},  // 82: worst waste 16383 B =  8.3%;  48 pages
    { 212992},  // 83: worst waste 16383 B =  7.7%;  52 pages
    { 229376},  // 84: worst waste 16383 B =  7.1%;  56 pages
    { 245760},  // 85: worst waste 16383 B =  6.7%;  60 pages
    { 262144},  // 86: worst waste 16383 B =  6.2%;  64 pages
}};
// clang-format on

inline constexpr std::size_t kNumClasses = kSizeClasses.size();
inline constexpr std::size_t kNumSmallClasses = 56;  // classes with size <= kMaxSmallSize

constexpr bool is_small_class(std::size_t cls) { return cls < kNumSmallClasses; }

// Alignment every block of the class has: its lowest set bit, capped at a page
// (blocks sit at page_base + i * size, and pages are page-aligned).
constexpr std::size_t class_alignment(std::size_t cls) {
  std::size_t s = kSizeClasses[cls].size;
  std::size_t a = s & (~s + 1);
  return a > kPage ? kPage : a;
}

constexpr std::size_t blocks_per_page(std::size_t cls) { return kPage / kSizeClasses[cls].size; }
constexpr std::size_t pages_per_block(std::size_t cls) {
  return (kSizeClasses[cls].size + kPage - 1) / kPage;
}

namespace detail {
constexpr bool table_is_valid() {
  std::size_t prev = 0;
  for (std::size_t i = 0; i < kNumClasses; ++i) {
    std::size_t s = kSizeClasses[i].size;
    if (s <= prev || s % 8 != 0) return false;
    if ((i < kNumSmallClasses) != (s <= kMaxSmallSize)) return false;
    if (s > kMaxSmallSize && s % kPage != 0) return false;
    std::size_t worst = s - (prev + 1);
    bool ok = (s <= 64 && worst <= 7) || (s > kMaxSmallSize && s <= 32768 && worst < kPage) ||
              worst * 8 <= s;  // <= 12.5%
    if (!ok) return false;
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
constexpr std::array<std::uint8_t, kMaxClassSize / kPage + 1> make_page_lookup() {
  std::array<std::uint8_t, kMaxClassSize / kPage + 1> t{};
  std::size_t cls = kNumSmallClasses - 1;
  for (std::size_t pages = 0; pages <= kMaxClassSize / kPage; ++pages) {
    while (kSizeClasses[cls].size < pages * kPage) ++cls;
    t[pages] = static_cast<std::uint8_t>(cls);
  }
  return t;
}
inline constexpr auto kLookup8 = make_small_lookup<8>();
inline constexpr auto kLookup16 = make_small_lookup<16>();
inline constexpr auto kPageLookup = make_page_lookup();
}  // namespace detail

inline constexpr std::size_t kNoClass = ~std::size_t{0};

// The smallest class that holds `size` bytes at `alignment` (a power of two),
// or kNoClass when the request needs a mapping of its own.
constexpr std::size_t class_for(std::size_t size, std::size_t alignment) {
  if (size == 0) size = 1;
  if (alignment > kMaxCacheableAlign || size > kMaxClassSize) return kNoClass;
  if (size <= kMaxSmallSize) {
    std::size_t g = (size + 7) / 8;
    if (alignment <= 8) return detail::kLookup8[g];
    if (alignment == 16) return detail::kLookup16[g];
    std::size_t cls = detail::kLookup8[g];
    while (cls < kNumClasses && kSizeClasses[cls].size % alignment != 0) ++cls;
    return cls;
  }
  return detail::kPageLookup[(size + kPage - 1) / kPage];  // page-aligned: any alignment <= 4096
}

static_assert(class_for(1, 1) == 0 && class_for(8, 8) == 0 && class_for(9, 8) == 1);
static_assert(class_for(24, 16) == 3 && class_for(4096, 4096) == kNumSmallClasses - 1);
static_assert(class_for(4097, 8) == kNumSmallClasses && class_for(kMaxClassSize, 8) == kNumClasses - 1);
static_assert(class_for(kMaxClassSize + 1, 8) == kNoClass && class_for(8, 8192) == kNoClass);

// The fast paths' lookup: one load for a small request aligned to at most 16
// bytes (row 0 of the table serves alignments 1-8, row 1 alignment 16).
// Anything else, size 0 included, gets kNoClass and goes to the slow path,
// which asks class_for.
namespace detail {
inline constexpr std::array<std::array<std::uint8_t, kMaxSmallSize / 8 + 1>, 2> kLookupByAlign = {
    kLookup8, kLookup16};
}  // namespace detail
constexpr std::size_t small_class_for(std::size_t size, std::size_t alignment) {
  // alignment - 1 >= 16 also catches 0; the slow path reports bad alignments.
  if (size - 1 >= kMaxSmallSize || alignment - 1 >= 16 || (alignment & (alignment - 1)) != 0) return kNoClass;
  return detail::kLookupByAlign[alignment >> 4][(size + 7) >> 3];
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
  return true;
}
}  // namespace detail
static_assert(detail::small_lookup_agrees(), "fast class lookup disagrees with class_for");

}  // namespace dropalloc::core
