#!/usr/bin/env bash
# Builds (optimised) and runs the dropalloc demo.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
exec bazel run -c opt //examples:demo -- "$@"
