#ifndef DROPALLOC_TESTS_ATTACK36_FIRST_ATFORK_LIB_H_
#define DROPALLOC_TESTS_ATTACK36_FIRST_ATFORK_LIB_H_
/* What the constructor saw: 1 done, 0 skipped (no plugin argument). */
int first_atfork_lib_result(void);
/* Called by the plugin's constructor (dlopen holds the loader lock then). */
void first_atfork_plugin_ctor_running(void);
#endif
