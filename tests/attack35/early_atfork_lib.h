#ifndef DROPALLOC_TESTS_ATTACK35_EARLY_ATFORK_LIB_H_
#define DROPALLOC_TESTS_ATTACK35_EARLY_ATFORK_LIB_H_
#ifdef __cplusplus
extern "C" {
#endif
/* How many times a handler of the library allocated (in this process). */
int early_atfork_handlers_run(void);
#ifdef __cplusplus
}
#endif
#endif
