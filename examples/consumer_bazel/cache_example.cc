// A cache of values that are rebuilt when absent or dropped.
// Exits 0 when the second lookup is served without building.
#include <cstdio>
#include <string>

#include "allocator/dropalloc.h"

int main() {
  dropalloc::cache<int> squares_as_text;
  int builds = 0;
  auto build = [&builds] {
    ++builds;
    return std::string("forty-two squared is 1764");
  };
  std::string first = squares_as_text.get(42, build);
  std::string second = squares_as_text.get(42, build);
  std::printf("value: %s\nbuilds: %d\n", second.c_str(), builds);
  return first == second && first == "forty-two squared is 1764" && builds == 1 ? 0 : 1;
}
