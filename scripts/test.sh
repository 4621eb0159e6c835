#!/usr/bin/env bash
# The whole test suite: set-up, lint and types, then pytest, which runs everything else in parallel:
# the C tests in three variants (release, ASan+UBSan, TSan: tests/test_c_suite.py), the strace proof,
# the binding and pool tests, and the slow tiers (CI runs them all).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh

ruff check .
ruff format --check .
mypy harness
# C format: allocator/'s sources against .clang-format (clang-format -i FILE applies it)
git ls-files -z 'allocator/*.c' 'allocator/*.h' | xargs -0 clang-format --dry-run --Werror

# pytest exits 5 when it collected nothing: that is a broken suite, not a pass (set -e fails on it).
python3 -m pytest -n auto --durations=15 "$@"
