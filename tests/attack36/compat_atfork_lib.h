#ifndef DROPALLOC_TESTS_ATTACK36_COMPAT_ATFORK_LIB_H_
#define DROPALLOC_TESTS_ATTACK36_COMPAT_ATFORK_LIB_H_
/* 1 if the constructor registered through the compat pthread_atfork. */
int compat_atfork_registered(void);
#endif
