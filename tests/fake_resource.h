// Options for a droppable_resource over a fake OS (allocator/os/fake_os.h)
// that reports the chosen backing: the set-up of tests that watch or steer
// the resource's calls into the OS. The fake must outlive the resource.
#pragma once

#include "allocator/dropalloc.h"
#include "allocator/os/fake_os.h"

namespace dropalloc::testing {

inline resource_options on_fake_os(os::fake_os& os, backing b) {
  os.reported_backing = b;
  resource_options o;
  o.os = &os;
  return o;
}

}  // namespace dropalloc::testing
