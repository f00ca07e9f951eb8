// Work to run when a thread exits, without the C++ runtime library.
//
// A thread_local object with a destructor does this, but its registration goes
// through libstdc++ (__cxa_thread_atexit), which libdropalloc.so does not load
// (allocator/BUILD, NO_CXX_RUNTIME_COPTS). Two of glibc's own mechanisms do
// it here:
//  - the destructor of a thread-specific key, made at load time: it runs
//    after the thread's thread_local destructors, so their frees are still
//    cached and handed back, and it also runs for a thread whose first call
//    comes from another key's destructor, which glibc runs later still (a
//    __cxa_thread_atexit_impl registration made there is never run: glibc
//    has run those already, and the thread's table leaked);
//  - __cxa_thread_atexit_impl (what libstdc++ calls), for the main thread,
//    whose handlers exit() runs (it runs no key destructors).
//
// Limits: fn never runs for a thread whose first call comes after glibc's
// last chance to run it: in the fourth round of key destructors (glibc runs
// at most four: a destructor that set its own key again three times), or in
// the frees glibc makes as the thread exits, after its key destructors (the
// thread-local storage of other threads' cached stacks). Nor for any thread
// but the main one where no key could be made (32 or more existed at load
// time: setting a higher one allocates) or the loader would not keep this
// object loaded for good (thread_exit.cc says why the key needs it): there
// __cxa_thread_atexit_impl would be the only way, and it takes the loader's
// lock, which a first call made inside glibc's thread-exit frees must not
// take (thread_exit.cc). The thread caches look for tables of exited threads
// later (thread_cache.cc, reap_exited_tables).
#pragma once

namespace dropalloc::core {

// Runs fn(arg) when the calling thread exits. fn must be the same function
// in every call of the process (the thread caches' exit handler), and it may
// run twice for the main thread (pthread_exit from main): it must let a
// second run do nothing. False if it could not be registered (glibc could
// not allocate its record); fn then never runs.
bool call_at_thread_exit(void (*fn)(void*), void* arg) noexcept;

}  // namespace dropalloc::core
