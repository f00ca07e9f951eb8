// Runs the fuzz target without libFuzzer: seeded random inputs (and any files
// named on the command line), so the same invariants run under Bazel's plain,
// asan, ubsan and tsan builds. DROPALLOC_TEST_FUZZ_RUNS sets the number of inputs.
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <fstream>
#include <iterator>
#include <random>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    std::ifstream f(argv[i], std::ios::binary);
    std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    LLVMFuzzerTestOneInput(bytes.data(), bytes.size());
  }
  const char* env = getenv("DROPALLOC_TEST_FUZZ_RUNS");
  int runs = env != nullptr ? atoi(env) : 60;
  for (int seed = 0; seed < runs; ++seed) {
    std::mt19937 rng(static_cast<unsigned>(seed));
    std::vector<uint8_t> bytes(64 + rng() % 4000);
    for (auto& b : bytes) b = static_cast<uint8_t>(rng());
    LLVMFuzzerTestOneInput(bytes.data(), bytes.size());
  }
  printf("alloc_fuzz replay: %d random inputs, invariants held\n", runs);
  return 0;
}
