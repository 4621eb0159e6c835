#!/usr/bin/env bash
# The whole test suite: set-up, C tests (release, ASan+UBSan, TSan), lint and types, Python tests.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh

make -C allocator VARIANT=release test
make -C allocator VARIANT=asan test

# TSan needs its shadow-memory layout; with high ASLR entropy (vm.mmap_rnd_bits) some kernels map the
# program where TSan expects none and it aborts with "unexpected memory mapping". Then run it again
# with ASLR off for that process only (setarch -R), rather than changing the machine's sysctl.
tsan_log=$(mktemp)
trap 'rm -f "$tsan_log"' EXIT
if ! make -C allocator VARIANT=tsan test 2>&1 | tee "$tsan_log"; then
	if grep -q "unexpected memory mapping" "$tsan_log"; then
		echo "test: TSan cannot map its shadow with ASLR on; rerunning under setarch -R"
		setarch "$(uname -m)" -R make -C allocator VARIANT=tsan test
	else
		exit 1
	fi
fi

ruff check .
ruff format --check .
mypy harness

# pytest exits 5 when it collected nothing: that is a broken suite, not a pass (set -e fails on it).
python3 -m pytest -n auto
