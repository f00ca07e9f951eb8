#!/usr/bin/env python3
"""Checks that the CMake build and the Bazel build agree.

usage: check_sources.py [REPO_ROOT]     (default: $TEST_SRCDIR/$TEST_WORKSPACE or .)
       check_sources.py --selftest [REPO_ROOT]

- The sources CMakeLists.txt compiles into libdropalloc.so are those Bazel
  links into //allocator:libdropalloc.so; those of libdropalloc.a are those of
  //allocator:dropalloc plus //allocator:c_api (read from allocator/BUILD).
- DROPALLOC_INSTALLED_HEADERS is exactly allocator/dropalloc.h,
  allocator/dropalloc_c.h and every header of this repository they include
  (asked of the compiler: g++ -MM).
- The version in allocator/version.h is the newest one in CHANGELOG.md, and
  the CMake example consumer asks find_package for its MAJOR.MINOR.

Exits 0 when all agree, 1 with one line per disagreement otherwise.
--selftest also feeds the checks a CMakeLists.txt with one source and one
header removed and a CHANGELOG without the version, and requires that each is
reported.
"""
import os
import re
import subprocess
import sys

PUBLIC_HEADERS = ["allocator/dropalloc.h", "allocator/dropalloc_c.h"]


# ---- allocator/BUILD ----------------------------------------------------------

def read_build(text, where="allocator/BUILD"):
    """Evaluates a BUILD file with stand-ins for Bazel's functions; returns
    {target name: attributes} of its rules."""
    rules = {}

    def rule(**attrs):
        rules[attrs["name"]] = attrs

    names = {
        "cc_library": rule, "cc_binary": rule, "cc_test": rule, "filegroup": rule,
        "config_setting": rule, "genrule": rule, "sh_test": rule,
        "select": lambda d, **kw: [],
        "glob": lambda *a, **kw: [],
        "package": lambda **kw: None,
        "exports_files": lambda *a, **kw: None,
    }

    def load(_label, *symbols, **aliases):
        for s in list(symbols) + list(aliases):
            if s not in names:
                names[s] = rule if s.startswith("cc_") else []

    names["load"] = load
    try:
        exec(compile(text, where, "exec"), {"__builtins__": {}}, names)
    except NameError as e:
        raise SystemExit(f"check_sources.py: {where}: {e}: teach read_build() about it")
    return rules


def closure(rules, roots):
    """The .cc sources of the roots and of their dependencies in the package."""
    seen, out, todo = set(), set(), list(roots)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        if name not in rules:
            raise SystemExit(f"check_sources.py: allocator/BUILD has no target '{name}'")
        attrs = rules[name]
        out.update("allocator/" + s for s in attrs.get("srcs", []) if s.endswith(".cc"))
        for dep in attrs.get("deps", []):
            if dep.startswith(":"):
                todo.append(dep[1:])
            elif dep.startswith("//allocator:"):
                todo.append(dep[len("//allocator:"):])
    return out


# ---- CMakeLists.txt -------------------------------------------------------------

def cmake_list(text, var):
    m = re.search(r"^set\(" + var + r"\b(.*?)^\)", text, flags=re.S | re.M)
    if m is None:
        return None
    body = re.sub(r"#[^\n]*", "", m.group(1))
    return set(body.split())


# ---- the checks -------------------------------------------------------------------

def check_sources(build_text, cmake_text):
    errors = []
    rules = read_build(build_text)
    lists = {}
    for var in ("DROPALLOC_BASE_SOURCES", "DROPALLOC_CXX_API_SOURCES", "DROPALLOC_SHIM_SOURCES"):
        lists[var] = cmake_list(cmake_text, var)
        if lists[var] is None:
            errors.append(f"CMakeLists.txt: no set({var} ...)")
            lists[var] = set()
    pairs = [
        ("libdropalloc.so", closure(rules, ["libdropalloc.so"]),
         ("DROPALLOC_BASE_SOURCES", "DROPALLOC_SHIM_SOURCES")),
        ("libdropalloc.a", closure(rules, ["dropalloc", "c_api"]),
         ("DROPALLOC_BASE_SOURCES", "DROPALLOC_CXX_API_SOURCES")),
    ]
    for lib, bazel, vars_ in pairs:
        cmake = set().union(*(lists[v] for v in vars_))
        label = "//allocator:libdropalloc.so" if lib.endswith(".so") else "//allocator:dropalloc + //allocator:c_api"
        for src in sorted(bazel - cmake):
            errors.append(f"{src}: Bazel builds it into {label}, but CMakeLists.txt leaves it out of {lib} "
                          f"(add it to {' or '.join(vars_)})")
        for src in sorted(cmake - bazel):
            errors.append(f"{src}: CMakeLists.txt compiles it into {lib} ({' + '.join(vars_)}), "
                          f"but Bazel's {label} does not")
    return errors


def header_closure(root):
    cmd = ["g++", "-std=c++20", "-MM", "-I", ".", "-x", "c++"] + PUBLIC_HEADERS
    r = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"check_sources.py: {' '.join(cmd)} failed:\n{r.stderr}")
    deps = r.stdout.replace("\\\n", " ").split()
    return {d for d in deps if d.startswith("allocator/") and d.endswith(".h")}


def check_headers(included, cmake_text):
    installed = cmake_list(cmake_text, "DROPALLOC_INSTALLED_HEADERS")
    if installed is None:
        return ["CMakeLists.txt: no set(DROPALLOC_INSTALLED_HEADERS ...)"]
    errors = []
    for h in sorted(included - installed):
        errors.append(f"{h}: the public headers include it, but CMakeLists.txt does not install it "
                      "(add it to DROPALLOC_INSTALLED_HEADERS)")
    for h in sorted(installed - included):
        errors.append(f"{h}: installed by CMakeLists.txt (DROPALLOC_INSTALLED_HEADERS), but no public header "
                      "includes it: only public headers are installed")
    return errors


def check_version(version_h, changelog, consumer_cmake):
    parts = {}
    for p in ("MAJOR", "MINOR", "PATCH"):
        m = re.search(r"^#define DROPALLOC_VERSION_" + p + r" (\d+)$", version_h, flags=re.M)
        if m is None:
            return [f"allocator/version.h: no '#define DROPALLOC_VERSION_{p} <number>'"]
        parts[p] = m.group(1)
    version = "{MAJOR}.{MINOR}.{PATCH}".format(**parts)
    errors = []
    m = re.search(r'^#define DROPALLOC_VERSION_STRING "([^"]*)"$', version_h, flags=re.M)
    if m is None or m.group(1) != version:
        errors.append(f"allocator/version.h: DROPALLOC_VERSION_STRING is not \"{version}\"")
    heads = re.findall(r"^## \[?(\d+\.\d+\.\d+)", changelog, flags=re.M)
    if not heads or heads[0] != version:
        errors.append(f"CHANGELOG.md: its newest entry is {heads[0] if heads else 'missing'}, "
                      f"allocator/version.h says {version}")
    want = "{MAJOR}.{MINOR}".format(**parts)
    m = re.search(r"find_package\(dropalloc\s+([\d.]+)", consumer_cmake)
    if m is None or m.group(1) != want:
        errors.append(f"examples/consumer_cmake/CMakeLists.txt: find_package(dropalloc {want} ...) expected "
                      f"(found {m.group(1) if m else 'none'})")
    return errors


def read(root, path):
    with open(os.path.join(root, path), encoding="utf-8") as f:
        return f.read()


def run_checks(root, build_text, cmake_text, changelog):
    errors = check_sources(build_text, cmake_text)
    errors += check_headers(header_closure(root), cmake_text)
    errors += check_version(read(root, "allocator/version.h"), changelog,
                            read(root, "examples/consumer_cmake/CMakeLists.txt"))
    return errors


def main(argv):
    selftest = "--selftest" in argv
    args = [a for a in argv[1:] if a != "--selftest"]
    if args:
        root = args[0]
    elif "TEST_SRCDIR" in os.environ:
        root = os.path.join(os.environ["TEST_SRCDIR"], os.environ.get("TEST_WORKSPACE", "dropalloc"))
    else:
        root = "."
    build_text = read(root, "allocator/BUILD")
    cmake_text = read(root, "CMakeLists.txt")
    changelog = read(root, "CHANGELOG.md")

    errors = run_checks(root, build_text, cmake_text, changelog)
    for e in errors:
        print("check_sources: " + e)
    if errors:
        return 1
    print("check_sources: CMakeLists.txt and allocator/BUILD agree (sources, installed headers, version)")

    if selftest:
        broken = [
            ("a base source removed", cmake_text.replace("  allocator/core/heap.cc\n", "", 1), changelog, "core/heap.cc"),
            ("a shim source removed", cmake_text.replace("  allocator/shim/malloc.cc\n", "", 1), changelog, "shim/malloc.cc"),
            ("an installed header removed", cmake_text.replace("  allocator/core/types.h\n", "", 1), changelog,
             "core/types.h"),
            ("an internal header installed",
             cmake_text.replace("  allocator/version.h\n", "  allocator/version.h\n  allocator/shim/shim.h\n", 1),
             changelog, "shim/shim.h"),
            ("the CHANGELOG behind", cmake_text, re.sub(r"^## ", "## 0.0.1\n\n## ", changelog, count=1, flags=re.M),
             "CHANGELOG.md"),
        ]
        for what, cmake_bad, changelog_bad, needle in broken:
            if cmake_bad == cmake_text and changelog_bad == changelog:
                print(f"check_sources: selftest '{what}': the mutation did not apply (edit the selftest)")
                return 1
            found = run_checks(root, build_text, cmake_bad, changelog_bad)
            if not any(needle in e for e in found):
                print(f"check_sources: selftest '{what}': not reported (got {found})")
                return 1
        print(f"check_sources: selftest: all {len(broken)} broken inputs reported")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
