"""A test program run with libdropalloc.so preloaded, once per environment."""

load("@rules_cc//cc:defs.bzl", "cc_binary")

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
        test_name, env = variant[0], variant[1]
        extra_tags = variant[2] if len(variant) > 2 else []
        native.sh_test(
            name = test_name,
            size = size,
            srcs = ["//tests/shim:run_preloaded.sh"],
            args = ["$(location :%s)" % name],
            data = [
                ":" + name,
                "//allocator:libdropalloc.so",
            ],
            env = env,
            tags = ["no_sanitizer"] + extra_tags,
        )
