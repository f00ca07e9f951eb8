#!/usr/bin/env bash
# Runs a test program as is: run_plain.sh <program> [args...]
set -euo pipefail
prog="$1"
shift
exec "$prog" "$@"
