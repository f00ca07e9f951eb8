#ifndef DROPALLOC_TESTS_ATTACK36_EARLY_FORK_LIB_H_
#define DROPALLOC_TESTS_ATTACK36_EARLY_FORK_LIB_H_
/* Forks the constructor made (and waited for) before the allocator's
 * constructor ran; -1 if one failed. */
int early_fork_lib_forks(void);
#endif
