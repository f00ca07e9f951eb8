"""Test programs run with libdropalloc.so preloaded."""

load("@rules_cc//cc:defs.bzl", "cc_binary")

def preloaded_test(name, program, args = [], data = [], env = {}, tags = [], size = "small"):
    """One sh_test: program (a target of this package) run under the preload.

    run_preloaded.sh requires that the preload took. Tagged no_sanitizer: a
    sanitizer runtime owns malloc.

    Args:
      name: the test.
      program: the program's target name, without the colon.
      args: arguments after the program's path ($(location) allowed).
      data: files those arguments name, beyond the program and the library.
      env: the test's environment.
      tags: extra tags (e.g. ["manual"]).
      size: the test's size.
    """
    native.sh_test(
        name = name,
        size = size,
        srcs = ["//tests/shim:run_preloaded.sh"],
        args = ["$(location :%s)" % program] + args,
        data = [
            ":" + program,
            "//allocator:libdropalloc.so",
        ] + data,
        env = env,
        tags = ["no_sanitizer"] + tags,
    )

def preloaded_program_tests(name, srcs, variants, size = "medium", deps = []):
    """Builds program `name` from srcs and one sh_test per variant.

    Each test runs the program through run_preloaded.sh, which requires that
    the preload took. Tagged no_sanitizer: a sanitizer runtime owns malloc.

    Args:
      name: the program.
      srcs: its sources (C or C++; tests/shim/shim_check.h available).
      variants: list of (test name, environment dict) pairs, or triples
        with a list of extra tags (e.g. ["manual"]) last.
      size: the tests' size.
      deps: test helpers the program uses beyond tests/shim/shim_check.h.
    """
    cc_binary(
        name = name,
        testonly = True,
        srcs = srcs,
        linkopts = [
            "-ldl",
            "-lpthread",
        ],
        deps = [
            "//allocator:c_api_header",
            "//tests/shim:shim_check",
        ] + deps,
    )
    for variant in variants:
        preloaded_test(
            name = variant[0],
            program = name,
            env = variant[1],
            tags = variant[2] if len(variant) > 2 else [],
            size = size,
        )
