// dropalloc: a C++20 allocator whose arenas live in Linux MAP_DROPPABLE memory.
//
// The kernel may zero droppable pages under memory pressure instead of
// OOM-killing the process; dropalloc tells you, per block and without a system
// call, whether your data is still whole, so you can rebuild what was lost.
//
//   dropalloc::droppable_resource res;
//   auto b = res.allocate_block(4096);         // a block and its generation
//   res.write_and_seal(b.ptr, src, 4096);      // copy in, seal, verify
//   ... later ...
//   memcpy(dst, b.ptr, 4096);                  // copy out, then check:
//   if (!res.is_intact(b)) rebuild();          // a page was dropped meanwhile
//
//   dropalloc::regenerable<std::pmr::vector<std::pmr::string>> v(res, build);
//   v.visit([](const auto& names) { ... });    // a checked private copy
//
// Never walk or destroy a pointer-based container whose memory came from a
// droppable_resource once its pages may have dropped (README, "What is unsafe
// after a drop").
#pragma once

#if __cplusplus < 202002L
#error "allocator/dropalloc.h needs C++20: compile with -std=c++20 (Bazel: copts; CMake: dropalloc::dropalloc_static sets it)"
#else

#include "allocator/cache/cache.h"
#include "allocator/cache/headroom.h"
#include "allocator/core/types.h"
#include "allocator/os/os.h"
#include "allocator/pmr/droppable_resource.h"
#include "allocator/version.h"
#endif
