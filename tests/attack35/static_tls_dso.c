/* Loaded with dlopen by stack_cache_dlopen.c: initial-exec TLS makes the
 * object need static TLS (DF_STATIC_TLS), so dlopen initialises its block in
 * every thread (_dl_init_static_tls), holding the loader's lock
 * (dl_load_lock) and then the thread-stack cache lock (dl_stack_cache_lock). */
__thread int attack35_static_tls_value __attribute__((tls_model("initial-exec"))) = 35;

int attack35_static_tls_get(void) { return attack35_static_tls_value; }
