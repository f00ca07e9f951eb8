#!/usr/bin/env python3
"""Turns every ```cpp block of README.md into a function of one C++ file, so
that the README's examples are compiled (and run) against the current API.

usage: extract_snippets.py README.md out.cc

#include lines are hoisted to the top of the file; everything else of block N
becomes the body of `void readme_snippet_N()`. The names the examples leave
to the reader (decode_into, use, ...) come from prelude.h.
"""
import re
import sys


def main() -> int:
    readme, out = sys.argv[1], sys.argv[2]
    text = open(readme, encoding="utf-8").read()
    blocks = re.findall(r"^```cpp\n(.*?)^```", text, flags=re.S | re.M)
    if not blocks:
        print(f"{readme}: no ```cpp blocks found", file=sys.stderr)
        return 1
    includes, bodies = [], []
    for block in blocks:
        body = []
        for line in block.splitlines():
            if line.startswith("#include"):
                includes.append(line)
            else:
                body.append("  " + line if line else "")
        bodies.append(body)
    with open(out, "w", encoding="utf-8") as f:
        f.write("// Generated from README.md by tests/readme/extract_snippets.py. Do not edit.\n")
        f.write('#include "tests/readme/prelude.h"\n')
        for inc in dict.fromkeys(i.split("//")[0].strip() for i in includes):
            f.write(inc + "\n")
        f.write("\n#include <doctest/doctest.h>\n\n")
        for n, body in enumerate(bodies, 1):
            f.write(f"void readme_snippet_{n}() {{\n")
            f.write("\n".join(body) + "\n}\n\n")
            f.write(f'TEST_CASE("README example {n} compiles and runs") {{ readme_snippet_{n}(); }}\n\n')
    return 0


if __name__ == "__main__":
    sys.exit(main())
