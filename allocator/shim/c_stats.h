// Copies the engine's statistics into the C API's struct (shared by
// dropalloc_get_stats and dropalloc_malloc_stats).
#pragma once

#include <cstdint>

#include "allocator/core/types.h"
#include "allocator/dropalloc_c.h"

namespace dropalloc::shim {

inline void to_c_stats(const resource_stats& st, std::uint64_t foreign_ignored, dropalloc_stats* out) noexcept {
  out->blocks_live = st.blocks_live;
  out->bytes_live = st.bytes_live;
  out->arenas_mapped = st.arenas_mapped;
  out->bytes_mapped = st.bytes_mapped;
  out->bytes_resident = st.bytes_resident;
  out->metadata_bytes = st.metadata_bytes;
  out->drops_detected = st.drops_detected;
  out->misuse_refused = st.misuse_refused;
  out->foreign_ignored = foreign_ignored;
  out->droppable = st.droppable ? 1 : 0;
}

}  // namespace dropalloc::shim
