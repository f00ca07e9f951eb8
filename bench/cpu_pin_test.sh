#!/usr/bin/env bash
# Runs bench/cpu_pin_test.py (unittest) with the system's python3.
set -euo pipefail
exec python3 bench/cpu_pin_test.py -v
