// Whether this kernel gives a read fault on untouched anonymous memory the
// shared zero page, as Linux normally does, or a fresh page of its own.
//
// Some virtual machines' kernels do the latter: there, reading memory that
// was never written, or that the kernel reclaimed (a dropped page), makes it
// resident and charges it to the memory cgroup. Tests whose claim rests on
// reads being free (a read-only scan that must not grow the resident set; a
// private-fallback run under a cgroup limit whose checks read reclaimed pages)
// ask here first and say why they check less where reads allocate.
#pragma once

#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdio>

namespace dropalloc::testing {

// Resident pages of this process (/proc/self/statm), or -1.
inline long resident_pages() {
  std::FILE* f = std::fopen("/proc/self/statm", "r");
  if (f == nullptr) return -1;
  long size = 0, resident = -1;
  if (std::fscanf(f, "%ld %ld", &size, &resident) != 2) resident = -1;
  std::fclose(f);
  return resident;
}

// True when reading 256 untouched pages made at least half of them resident.
inline bool reads_allocate_pages() {
  constexpr std::size_t kPages = 256;
  const std::size_t page = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
  void* m = mmap(nullptr, kPages * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (m == MAP_FAILED) return false;
  const long before = resident_pages();
  unsigned sum = 0;
  for (std::size_t i = 0; i < kPages; ++i) sum += static_cast<const volatile unsigned char*>(m)[i * page];
  const long after = resident_pages();
  munmap(m, kPages * page);
  return sum == 0 && before >= 0 && after - before >= static_cast<long>(kPages / 2);
}

}  // namespace dropalloc::testing
