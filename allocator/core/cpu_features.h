// What the free fast path may ask of this CPU beyond baseline x86-64: found
// once when the library is loaded (core/cpu_features.cc).
#pragma once

namespace dropalloc::core {

// Whether this CPU has prefetchw (CPUID 0x80000001, ECX bit 8). False until
// our initialisers have run, so a free that runs before them skips the hint.
// Checked, not assumed: the instruction is architectural only on CPUs that
// report it.
extern bool g_cpu_has_prefetchw;

// Brings the line holding *p into this CPU's cache ready to be written: a
// hint, nothing is written. __builtin_prefetch with rw = 1 emits prefetchw
// only when the compiler targets a CPU known to have it.
[[gnu::always_inline]] inline void prefetch_for_write(const void* p) noexcept {
#if defined(__x86_64__) && defined(__GNUC__)
  if (__builtin_expect(g_cpu_has_prefetchw, 1)) asm volatile("prefetchw %0" : : "m"(*static_cast<const char*>(p)));
#else
  __builtin_prefetch(p, 1);
#endif
}

}  // namespace dropalloc::core
