/* dropalloc's version, for C and C++. The header's numbers say what a program
 * was compiled against; dropalloc_version() (C, declared in dropalloc_c.h) and
 * dropalloc::version() (C++) say which library it runs with.
 *
 * Kept in step with CMakeLists.txt and CHANGELOG.md by
 * //tests/packaging:check_sources_test. */
#ifndef DROPALLOC_VERSION_H_
#define DROPALLOC_VERSION_H_

#define DROPALLOC_VERSION_MAJOR 0
#define DROPALLOC_VERSION_MINOR 2
#define DROPALLOC_VERSION_PATCH 0
#define DROPALLOC_VERSION_STRING "0.2.0"

/* One number for #if comparisons: 0.2.0 is 200, 1.4.12 is 10412. */
#define DROPALLOC_VERSION \
  (DROPALLOC_VERSION_MAJOR * 10000 + DROPALLOC_VERSION_MINOR * 100 + DROPALLOC_VERSION_PATCH)

#ifdef __cplusplus
namespace dropalloc {
/* The library's version string, e.g. "0.2.0" (DROPALLOC_VERSION_STRING of the
 * build that produced the library, not of the header). */
const char* version() noexcept;
}  // namespace dropalloc
#endif

#endif /* DROPALLOC_VERSION_H_ */
