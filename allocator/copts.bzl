"""Compiler options every dropalloc target carries itself.

A workspace that depends on dropalloc (local_repository, http_archive) never
reads this repository's .bazelrc, so the language level must come with the
targets: load DROPALLOC_COPTS into every cc_library, cc_binary and cc_test
that compiles dropalloc's C++ sources.

Warnings as errors are not here: they are set for this repository's own
files in .bazelrc (--per_file_copt), so a newer compiler's new warning never
breaks the build of a project that only uses dropalloc.
"""

DROPALLOC_COPTS = ["-std=c++20"]
