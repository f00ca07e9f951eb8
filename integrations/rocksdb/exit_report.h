// The caches still alive when the process exits, so that DROPALLOC_STATS=1
// reports them too: db_bench and many servers never destroy their caches.
#pragma once

namespace dropalloc::rocks {

class secondary_cache;

namespace exit_report {
// Registers a cache (the first call also registers the exit handler).
void add(secondary_cache* c);
// Unregisters it; false if the exit handler already reported it.
bool remove(secondary_cache* c);
}  // namespace exit_report

}  // namespace dropalloc::rocks
