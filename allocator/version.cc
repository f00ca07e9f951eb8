// The library's version, as compiled into it (allocator/version.h).
#include "allocator/version.h"

#include "allocator/dropalloc_c.h"

static_assert(DROPALLOC_VERSION_MAJOR < 100 && DROPALLOC_VERSION_MINOR < 100 && DROPALLOC_VERSION_PATCH < 100,
              "DROPALLOC_VERSION packs each part into two decimal digits");

namespace dropalloc {

const char* version() noexcept { return DROPALLOC_VERSION_STRING; }

}  // namespace dropalloc

extern "C" __attribute__((visibility("default"))) const char* dropalloc_version(void) {
  return DROPALLOC_VERSION_STRING;
}
