// dropalloc: a C++20 allocator whose arenas live in Linux MAP_DROPPABLE memory.
//
// The kernel may zero droppable pages under memory pressure instead of
// OOM-killing the process; dropalloc tells you, per block and without a system
// call, whether your data is still whole, so you can rebuild what was lost.
//
//   dropalloc::droppable_resource res;
//   std::pmr::vector<int> v(&res);            // any std::pmr container
//   auto b = res.allocate_block(4096);         // a block and its generation
//   fill(b.ptr);  res.seal(b.ptr);             // written: seal it
//   ... later ...
//   use(b.ptr);                                // read, then check:
//   if (!res.is_intact(b)) rebuild();          // a page was dropped meanwhile
#pragma once

#include "allocator/cache/cache.h"
#include "allocator/core/types.h"
#include "allocator/os/os.h"
#include "allocator/pmr/droppable_resource.h"
