#ifndef DROPALLOC_TESTS_ATTACK35_MANY_KEYS_LIB_H_
#define DROPALLOC_TESTS_ATTACK35_MANY_KEYS_LIB_H_
#ifdef __cplusplus
extern "C" {
#endif
/* Keys the library's constructor created (0 unless ATTACK35_MANY_KEYS=1). */
int many_keys_made(void);
#ifdef __cplusplus
}
#endif
#endif
