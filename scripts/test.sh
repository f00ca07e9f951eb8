#!/usr/bin/env bash
# Runs the test suite: plain, then dropalloc used from other projects
# (consumers), then under ASan and UBSan (one build), then TSan.
# Stops at the first failing stage with a non-zero exit status.
#
#   DROPALLOC_TEST_CONFIGS  space-separated stages to run
#                           (default: "plain consumers asan_ubsan tsan";
#                           asan and ubsan run one sanitizer each)
#                           consumers: tests/packaging/consumers.sh builds the
#                           example consumers with Bazel (own output base),
#                           CMake and pkg-config, and runs them
#   CI=true                 non-interactive Bazel output
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh

configs=${DROPALLOC_TEST_CONFIGS:-plain consumers asan_ubsan tsan}

bazel_flags=()
if [[ "${CI:-}" == "true" ]]; then
  bazel_flags+=(--noshow_progress --curses=no --color=no --show_timestamps)
fi

for config in $configs; do
  case "$config" in
    plain|consumers|asan|ubsan|asan_ubsan|tsan) ;;
    *)
      echo "test.sh: unknown stage '$config' in DROPALLOC_TEST_CONFIGS (expected plain, consumers, asan, ubsan, asan_ubsan, tsan)" >&2
      exit 2
      ;;
  esac
done

for config in $configs; do
  if [[ "$config" == consumers ]]; then
    echo "==> test.sh: stage consumers: bash tests/packaging/consumers.sh"
    if ! bash tests/packaging/consumers.sh </dev/null; then
      echo "==> test.sh: stage 'consumers' FAILED" >&2
      exit 1
    fi
    continue
  fi
  config_flags=()
  if [[ "$config" != plain ]]; then
    # Tests tagged no_sanitizer LD_PRELOAD other allocators into their
    # binaries (meaningless under a sanitizer's own malloc): plain stage only.
    filters=-no_sanitizer
    # no_tsan: tests that start threads in a forked child, which TSan forbids.
    [[ "$config" == tsan ]] && filters+=,-no_tsan
    config_flags=("--config=$config" "--test_tag_filters=$filters")
  fi
  echo "==> test.sh: stage $config: bazel test ${config_flags[*]:+${config_flags[*]} }//..."
  if ! bazel test "${bazel_flags[@]}" "${config_flags[@]}" //... </dev/null; then
    echo "==> test.sh: stage '$config' FAILED" >&2
    exit 1
  fi
done
echo "==> test.sh: all stages passed ($configs)"
