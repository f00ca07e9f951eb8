/* A fixed amount of allocator-shaped work, timed: a stack of slot indices,
 * a state byte and a word per slot; batches of 25-1600 slots popped, marked
 * and written, then pushed back half in order, half in reverse (the shape of
 * the glibc_simple workload, without calling malloc). compare.py runs it on
 * each CPU to choose the one it pins single-threaded runs to, and during a
 * run to show whether that CPU stayed as fast. Prints "PROBE seconds=S". */
#include <stdint.h>
#include <stdio.h>
#include <time.h>

enum { kSlots = 4096, kMaxBatch = 1600, kRounds = 40000 };

static uint32_t free_slots[kSlots];
static uint8_t slot_state[kSlots];
static uint64_t slot_word[kSlots];

static double seconds_now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static uint64_t give_back(const uint32_t* held, uint32_t i, uint32_t* top) {
  uint32_t s = held[i];
  uint64_t w = slot_word[s];
  if (slot_state[s] == 1) {
    slot_state[s] = 0;
    free_slots[(*top)++] = s;
  }
  return w;
}

int main(void) {
  for (uint32_t i = 0; i < kSlots; ++i) free_slots[i] = (i * 2654435761u) & (kSlots - 1);
  static uint32_t held[kMaxBatch];
  uint32_t top = kSlots;
  uint64_t sum = 0;
  double start = seconds_now();
  for (uint32_t round = 0; round < kRounds; ++round) {
    uint32_t n = 25u << (2 * (round & 3));
    if (n > kMaxBatch) n = kMaxBatch;
    for (uint32_t i = 0; i < n; ++i) {
      uint32_t s = free_slots[--top];
      held[i] = s;
      slot_state[s] = 1;
      slot_word[s] += i;
    }
    for (uint32_t i = 0; i < n / 2; ++i) sum += give_back(held, i, &top);
    for (uint32_t i = n; i-- > n / 2;) sum += give_back(held, i, &top);
  }
  double elapsed = seconds_now() - start;
  /* sum keeps the loop's loads alive; its low bit is printed, not judged. */
  printf("PROBE seconds=%.6f check=%u\n", elapsed, (unsigned)(sum & 1));
  return 0;
}
