// Work to run when a thread exits, without the C++ runtime library.
//
// A thread_local object with a destructor does this, but its registration goes
// through libstdc++ (__cxa_thread_atexit), which libdropalloc.so does not load
// (allocator/BUILD, NO_CXX_RUNTIME_COPTS). glibc's own entry point is the one
// libstdc++ calls: same order (the reverse of registration, before the
// thread's TLS goes away), also run by exit() for the main thread.
#pragma once

namespace dropalloc::core {

// Runs fn(arg) when the calling thread exits. False if it could not be
// registered (glibc could not allocate its record); fn then never runs.
bool call_at_thread_exit(void (*fn)(void*), void* arg) noexcept;

}  // namespace dropalloc::core
