// What the free fast path may ask of this CPU beyond baseline x86-64, found
// once when the library is loaded (cpu_features.h, prefetch_for_write).
#include "allocator/core/cpu_features.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <cpuid.h>
#endif

namespace dropalloc::core {

namespace {

bool cpu_has_prefetchw() noexcept {
#if defined(__x86_64__) && defined(__GNUC__)
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (__get_cpuid(0x80000001u, &eax, &ebx, &ecx, &edx) == 0) return false;  // leaf not there
  return (ecx & (1u << 8)) != 0;  // PRFCHW (AMD: 3DNowPrefetch)
#else
  return false;
#endif
}

}  // namespace

// A dynamic initialiser: the malloc shim may free before it runs, and then
// reads false (zero-initialised static storage) and skips the hint.
bool g_cpu_has_prefetchw = cpu_has_prefetchw();

}  // namespace dropalloc::core
