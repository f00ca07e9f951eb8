// cfrac-like: many small, short-lived blocks from bignum arithmetic, the
// pattern of mimalloc-bench's cfrac (continued-fraction factoring). Every
// arithmetic result is a fresh malloc'd number and its operands are freed at
// once; a short list of recent results (small nodes) is kept as cfrac keeps
// its factor lists. Single thread; blocks of 16-400 B.
#include "bench/macro/workload.h"

namespace {

struct big {
  std::uint32_t n;  // limbs used
  std::uint32_t limb[];
};

big* make(std::uint32_t limbs) {
  auto* b = static_cast<big*>(std::malloc(sizeof(big) + limbs * sizeof(std::uint32_t)));
  b->n = limbs;
  return b;
}

big* from(std::uint32_t v) {
  big* b = make(1);
  b->limb[0] = v;
  return b;
}

big* mul_small(const big* a, std::uint32_t m) {
  big* r = make(a->n + 1);
  std::uint64_t carry = 0;
  for (std::uint32_t i = 0; i < a->n; ++i) {
    const std::uint64_t v = std::uint64_t{a->limb[i]} * m + carry;
    r->limb[i] = static_cast<std::uint32_t>(v);
    carry = v >> 32;
  }
  r->limb[a->n] = static_cast<std::uint32_t>(carry);
  if (carry == 0) r->n = a->n;
  return r;
}

big* add(const big* a, const big* b) {
  if (a->n < b->n) std::swap(a, b);
  big* r = make(a->n + 1);
  std::uint64_t carry = 0;
  for (std::uint32_t i = 0; i < a->n; ++i) {
    const std::uint64_t v = std::uint64_t{a->limb[i]} + (i < b->n ? b->limb[i] : 0) + carry;
    r->limb[i] = static_cast<std::uint32_t>(v);
    carry = v >> 32;
  }
  r->limb[a->n] = static_cast<std::uint32_t>(carry);
  if (carry == 0) r->n = a->n;
  return r;
}

struct node {
  node* next;
  std::uint64_t value;
};

}  // namespace

int main(int argc, char** argv) {
  const bench::options o = bench::parse(argc, argv);
  const int reps = o.quick ? 20 : 2500;
  std::uint64_t ops = 0, check = 0;
  bench::timer clock;
  for (int rep = 0; rep < reps; ++rep) {
    node* recent = nullptr;
    int recent_len = 0;
    auto remember = [&](std::uint64_t v) {
      auto* nd = static_cast<node*>(std::malloc(sizeof(node)));
      *nd = node{recent, v};
      recent = nd;
      if (++recent_len > 16) {  // keep the list short: drop the oldest
        node* p = recent;
        while (p->next->next != nullptr) p = p->next;
        std::free(p->next);
        p->next = nullptr;
        --recent_len;
      }
      ops += 1;
    };
    big* f = from(1);
    for (std::uint32_t k = 2; k <= 400; ++k) {
      big* g = mul_small(f, k + static_cast<std::uint32_t>(rep));
      std::free(f);
      f = g;
      remember(f->limb[0]);
      ops += 1;
    }
    big* a = from(0);
    big* b = from(1);
    for (int k = 0; k < 1500; ++k) {
      big* c = add(a, b);
      std::free(a);
      a = b;
      b = c;
      if (k % 8 == 0) remember(b->limb[b->n - 1]);
      ops += 1;
    }
    check += f->limb[0] + b->limb[0] + f->n + b->n;
    std::free(f);
    std::free(a);
    std::free(b);
    while (recent != nullptr) {
      node* next = recent->next;
      check += recent->value;
      std::free(recent);
      recent = next;
    }
  }
  bench::report("cfrac_like", clock.seconds(), ops, check);
}
