/* dropalloc's C API: droppable blocks with generations and a drop check, for C
 * and other-language programs.
 *
 * Link it (Bazel: deps = ["//allocator:c_api"]) or use libdropalloc.so, which
 * exports every function below, whether it is preloaded, linked or dlopen()ed.
 *
 *   dropalloc_resource* r = dropalloc_create(0);
 *   dropalloc_block b = dropalloc_alloc(r, 65536, 0);
 *   fill(b.ptr);
 *   dropalloc_seal(r, b.ptr);                  written: seal it
 *   ... later: read, then check ...
 *   use(b.ptr);
 *   if (!dropalloc_is_intact(r, b)) {
 *     fill(b.ptr);
 *     dropalloc_seal_rewritten(r, b.ptr);      revived: a new generation
 *     b.generation = dropalloc_generation(r, b.ptr);
 *   }
 *   dropalloc_free(r, b.ptr);
 *   dropalloc_destroy(r);
 *
 * The rules of the C++ API apply (README.md): seal after writing, check after
 * reading; a page of a sealed block may be dropped (read as zeros) at any time.
 * A NULL resource is accepted everywhere and does nothing: allocation
 * returns {NULL, 0} with errno EINVAL, queries answer FOREIGN / 0, frees,
 * trim and seal_all do nothing, get_stats and drop_for_testing return EINVAL.
 * Every function is thread-safe for a given resource, except
 * dropalloc_destroy, which must not race with any other use of it.
 */
#ifndef DROPALLOC_C_H_
#define DROPALLOC_C_H_

#include <stddef.h>
#include <stdint.h>

#include "allocator/version.h"

#ifdef __cplusplus
extern "C" {
#endif

#define DROPALLOC_C_API_VERSION 1

/* A set of droppable arenas: blocks go back to the resource they came from. */
typedef struct dropalloc_resource dropalloc_resource;

/* The answer to "is this (pointer, generation) still whole?". */
typedef enum dropalloc_state {
  DROPALLOC_INTACT = 0,   /* sealed, not freed since, no page lost */
  DROPALLOC_UNSEALED = 1, /* live but not sealed: cannot be vouched for */
  DROPALLOC_DROPPED = 2,  /* a page was dropped after the seal: rebuild it */
  DROPALLOC_STALE = 3,    /* freed (and maybe reused) since that generation */
  DROPALLOC_FOREIGN = 4   /* not a block start of this resource */
} dropalloc_state;

/* A block and the generation it had when it was handed out. */
typedef struct dropalloc_block {
  void* ptr;
  uint64_t generation;
} dropalloc_block;

/* Counters of a resource (or of the malloc shim's heaps). Exact when no other
 * thread allocates or frees meanwhile. */
typedef struct dropalloc_stats {
  uint64_t blocks_live;     /* handed out and not yet freed */
  uint64_t bytes_live;      /* their size-class-rounded bytes */
  uint64_t arenas_mapped;   /* arenas plus large-block mappings */
  uint64_t bytes_mapped;    /* address space of those */
  uint64_t bytes_resident;  /* of those, resident now (estimate) */
  uint64_t metadata_bytes;  /* ordinary memory used for metadata */
  uint64_t drops_detected;  /* sealed blocks found dropped */
  uint64_t misuse_refused;  /* double, foreign or interior frees ignored */
  uint64_t foreign_ignored; /* malloc shim only: free/realloc of memory outside every arena */
  int droppable;            /* 1: MAP_DROPPABLE arenas; 0: private fallback or ordinary */
} dropalloc_stats;

/* dropalloc_create flags. */
#define DROPALLOC_FORCE_FALLBACK 1u  /* private memory even where MAP_DROPPABLE works */
#define DROPALLOC_NO_THREAD_CACHE 2u /* no per-thread caches (short-lived, one-thread use) */

/* A new resource, or NULL with errno set (EINVAL: unknown flag; ENOMEM). */
dropalloc_resource* dropalloc_create(unsigned flags);
/* Unmaps all of the resource's memory, live blocks included. NULL: no-op. */
void dropalloc_destroy(dropalloc_resource* r);

/* A block of at least `bytes` bytes aligned to `alignment` (0: 16; otherwise a
 * power of two). On failure .ptr is NULL and errno is ENOMEM (or EINVAL for a
 * bad alignment). Contents are unspecified (zeros if never used before). */
dropalloc_block dropalloc_alloc(dropalloc_resource* r, size_t bytes, size_t alignment);
/* Frees a block. NULL is a no-op; double, foreign and interior frees are
 * refused, reported on stderr and counted in misuse_refused. */
void dropalloc_free(dropalloc_resource* r, void* p);

/* Declares the block fully written: records witnesses and lets the kernel drop
 * its pages oldest first. Returns the state right after sealing. A sealed
 * block that lost a page since its seal is not resealed: it becomes (and the
 * call returns) DROPPED; rewrite it and use dropalloc_seal_rewritten. A
 * re-seal of a block sealed before gives it a new generation (a generation
 * names one sealed version): read dropalloc_generation after it. Plain
 * writes to a sealed block are invisible until this call: a check before it
 * returns answers for the old seal, so keep readers from checking a block
 * you are updating in place until it has returned. */
dropalloc_state dropalloc_seal(dropalloc_resource* r, void* p);
/* dropalloc_seal for a block rewritten entirely since it was found DROPPED:
 * also takes a dropped block back to sealed. It vouches for what it reads, so
 * call it only once every byte was written again. A revived block has a new
 * generation (dropalloc_generation): handles from before read STALE. NULL r:
 * FOREIGN. */
dropalloc_state dropalloc_seal_rewritten(dropalloc_resource* r, void* p);
/* dropalloc_seal of n blocks at once, for about the price of one: the system
 * call every seal makes is made once, first, for the whole batch. Write every
 * block, then seal them together. states[i] (states may be NULL) receives
 * what dropalloc_seal(r, blocks[i]) would return. Returns how many are
 * DROPALLOC_INTACT. NULL r, or NULL blocks with n > 0: every state (if any)
 * FOREIGN, nothing sealed, returns 0. */
size_t dropalloc_seal_many(dropalloc_resource* r, void* const* blocks, size_t n, dropalloc_state* states);
/* Seals every live block of the resource that is not sealed yet (sealed and
 * dropped blocks keep their state); returns how many. Call it when no thread is
 * still writing an unsealed block of the resource. */
size_t dropalloc_seal_all(dropalloc_resource* r);
/* Whether (p, generation) is still whole. No system call. */
dropalloc_state dropalloc_check(dropalloc_resource* r, const void* p, uint64_t generation);
/* 1 if dropalloc_check(r, b.ptr, b.generation) is DROPALLOC_INTACT, else 0. */
int dropalloc_is_intact(dropalloc_resource* r, dropalloc_block b);

/* The current generation of a live block (0 if p is not one). */
uint64_t dropalloc_generation(dropalloc_resource* r, const void* p);
/* Usable bytes of a live block (0 if p is not one). */
size_t dropalloc_usable_size(dropalloc_resource* r, const void* p);
/* Fills *out; returns 0, or EINVAL for a NULL argument. */
int dropalloc_get_stats(dropalloc_resource* r, dropalloc_stats* out);
/* Returns arenas that hold no block to the OS now. */
void dropalloc_trim(dropalloc_resource* r);

/* Tests: zero the pages of [p, p + bytes) as a kernel drop would. Returns 0,
 * or EINVAL (touching nothing) unless all of it is the resource's memory. */
int dropalloc_drop_for_testing(dropalloc_resource* r, void* p, size_t bytes);

/* The library's version, "MAJOR.MINOR.PATCH" (allocator/version.h). */
const char* dropalloc_version(void);

/* "intact", "unsealed", "dropped", "stale", "foreign". */
const char* dropalloc_state_name(dropalloc_state s);

/* 1 when libdropalloc.so's malloc is the process's malloc (preloaded or linked
 * ahead of libc), else 0. */
int dropalloc_shim_active(void);
/* Statistics of the malloc shim's heaps: 0, EINVAL for NULL, or ENOSYS when
 * the shim is not the process's malloc. */
int dropalloc_malloc_stats(dropalloc_stats* out);

/* Statistics for people, as DROPALLOC_STATS=1 prints them at exit: a header
 * with the version, process id and time since the process started, then per
 * heap the live bytes and blocks, address space (current and peak) and its
 * resident part, metadata (current and peak), refused frees and detected
 * drops, in KiB/MiB/GiB; the process's resident set (current and peak); a
 * line explaining each figure. Written to the file descriptor fd with
 * write(2) and no allocation, so code that must not call malloc can call it;
 * to interleave with stdio output, fflush first and pass fileno(f).
 * Returns 0, EINVAL (fd < 0 or an unknown flag), or the errno of the write
 * that failed. Example output: README.md, "Statistics". */
#define DROPALLOC_STATS_CLASSES 1u /* also a line per size class that has arenas */
/* Every dropalloc heap of the process: the malloc replacement's (when it is
 * the process's malloc) and every resource, C or C++. */
int dropalloc_stats_print(int fd, unsigned flags);
/* One resource. NULL r: EINVAL, nothing printed. */
int dropalloc_resource_stats_print(dropalloc_resource* r, int fd, unsigned flags);

#ifdef __cplusplus
}
#endif

#endif /* DROPALLOC_C_H_ */
