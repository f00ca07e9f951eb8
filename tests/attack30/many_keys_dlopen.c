/* Finding: attack29's finding 2 (a thread whose first allocator call is in a
 * pthread key destructor leaks its table, tag and a refill of blocks) is
 * fixed only when dropalloc's exit key is below 32. A program that already
 * has 32 keys when dropalloc loads (a plugin or libdropalloc.so dlopen()ed
 * into a program whose libraries made their keys) gets the
 * __cxa_thread_atexit_impl registration, which glibc never runs when it is
 * made from a key destructor. Here: 40 keys, then dlopen of libdropalloc.so
 * (C API), 200 threads whose only allocations are in a key destructor; with
 * nothing live, dropalloc_trim() cannot give the arenas back. The control
 * (the same program without the 40 keys) leaves nothing. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "allocator/dropalloc_c.h"
#include "tests/shim/shim_check.h"


static dropalloc_resource* (*p_create)(unsigned);
static dropalloc_block (*p_alloc)(dropalloc_resource*, size_t, size_t);
static void (*p_free)(dropalloc_resource*, void*);
static int (*p_stats)(dropalloc_resource*, dropalloc_stats*);
static void (*p_trim)(dropalloc_resource*);

static dropalloc_resource* g_res;
static pthread_key_t g_key;

static void key_destructor(void* v) {
  (void)v;
  void* p = p_alloc(g_res, 48, 16).ptr;
  CHECK(p != NULL);
  p_free(g_res, p);
}

static void* set_key(void* arg) {
  (void)arg;
  pthread_setspecific(g_key, (void*)1);
  return NULL;
}

static void* make(void* arg) {
  (void)arg;
  g_res = p_create(0);
  return NULL;
}

static void on_thread(void* (*fn)(void*)) {
  pthread_t t;
  CHECK(pthread_create(&t, NULL, fn, NULL) == 0);
  CHECK(pthread_join(t, NULL) == 0);
}

int main(int argc, char** argv) {
  CHECK(argc >= 2);
  const int other_keys = argc > 2 ? atoi(argv[2]) : 40;
  pthread_key_t keys[64];
  for (int i = 0; i < other_keys; ++i) CHECK(pthread_key_create(&keys[i], NULL) == 0);
  void* lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
  CHECK(lib != NULL);
  *(void**)&p_create = dlsym(lib, "dropalloc_create");
  *(void**)&p_alloc = dlsym(lib, "dropalloc_alloc");
  *(void**)&p_free = dlsym(lib, "dropalloc_free");
  *(void**)&p_stats = dlsym(lib, "dropalloc_get_stats");
  *(void**)&p_trim = dlsym(lib, "dropalloc_trim");
  CHECK(p_create && p_alloc && p_free && p_stats && p_trim);
  on_thread(make);
  CHECK(g_res != NULL);
  CHECK(pthread_key_create(&g_key, key_destructor) == 0);
  for (int i = 0; i < 200; ++i) on_thread(set_key);
  p_trim(g_res);
  dropalloc_stats st;
  memset(&st, 0, sizeof st);
  CHECK(p_stats(g_res, &st) == 0);
  printf("%d keys before dlopen, 200 threads allocating only in a key destructor: blocks_live %llu, "
         "arenas mapped after trim %llu, bytes mapped %llu\n",
         other_keys, (unsigned long long)st.blocks_live, (unsigned long long)st.arenas_mapped,
         (unsigned long long)st.bytes_mapped);
  CHECK(st.blocks_live == 0);
  CHECK(st.arenas_mapped == 0);
  return 0;
}
