// The background purger: one thread per process that hands idle memory back
// on a clock, so a program that stops calling the allocator still gets its
// free memory returned after the decay time (heap::decay).
//
// It runs only while some heap with heap_options::background_decay has decay
// work pending, and sleeps on a condition variable otherwise. It is started
// on first need by the next allocation slow path, seal or free, with every
// signal blocked, and restarted in a forked child the same way. Not by a free
// of the malloc replacement (heap_options::purger_starts_on_free): the C
// library calls free() while holding locks of its own that creating a thread
// takes again (glibc frees an exited thread's TLS under its stack-cache lock,
// which pthread_create takes), and a thread started there waits on its
// creator for good. If the thread cannot be created the heaps still decay on
// their next operation, as without it.
#pragma once

#include <cstdint>

namespace dropalloc::core::purger {

// Some heap has decay work. Cheap, no allocation, safe under allocator locks.
void request(std::uint64_t tick_ms) noexcept;

// Starts the thread if request() asked for it and it is not running in this
// process. Call with no allocator lock held, and never from a free the C
// library may make (see above).
void start_if_requested() noexcept;

// Whether the thread could not be created (then decay happens only on later
// operations).
bool unavailable() noexcept;

// Called in a forked child: the thread did not survive the fork.
void forget_after_fork() noexcept;

}  // namespace dropalloc::core::purger
