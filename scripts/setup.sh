#!/usr/bin/env bash
# Set up a fresh Debian machine (as root) for kpool: system packages, then the harness in editable
# mode with its dev tools (which builds libkpool), then `kpool doctor`, which fails on anything missing.
# Idempotent: installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

# Each package is named here even when another one recommends it: apt runs with --no-install-recommends,
# and tests/test_setup_packages.py checks that every system file kpool needs (the list in
# harness/doctor.py) is in the Depends closure of this list.
#   build-essential        make, gcc and gcc's ASan/UBSan/TSan runtimes (C tests in three variants)
#   clang                  the fuzz and coverage variants (-fsanitize=fuzzer-no-link exists only in clang)
#   libclang-rt-14-dev     compiler-rt: <sanitizer/asan_interface.h> for the fuzz build, and Scudo, the
#                          hardened peer (only a recommendation of clang)
#   llvm                   llvm-symbolizer, for function names in sanitizer reports
#   binutils               addr2line, for coverage per source file and the op driver's backtraces
#   strace                 the proof that the allocation path makes no system call
#   gdb                    every thread's stack when a stress worker hangs (else /proc's kernel stacks)
#   clang-format           the C format check in scripts/test.sh (.clang-format)
#   valgrind               callgrind: the exact instruction counts of kp_alloc and kp_free that the slow
#                          tests hold to a budget (tests/test_instruction_counts.py)
#   libjemalloc2 libmimalloc2.0 libtcmalloc-minimal4   the peer allocators
#   chromium               renders the HTML report in its test
#   time                   GNU time: a program's own peak RSS in `kpool run`
#   sqlite3 git redis-server redis-tools   the program workloads (workloads/programs/*.yaml, their
#                          `requires`): the sqlite3 CLI, git, redis-server and redis-benchmark/redis-cli;
#                          gcc and make (build-essential) build the benchmark programs and libkpool there
PACKAGES=(build-essential make clang clang-format libclang-rt-14-dev llvm binutils strace gdb valgrind libjemalloc2 libmimalloc2.0 libtcmalloc-minimal4 chromium time sqlite3 git redis-server redis-tools)

missing=()
for pkg in "${PACKAGES[@]}"; do
	dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
# apt-cache needs package lists (the set-up test asks it for dependencies); a fresh image has none.
if ((${#missing[@]})) || ! compgen -G '/var/lib/apt/lists/*_Packages' >/dev/null; then
	apt-get update -q
fi
if ((${#missing[@]})); then
	echo "setup: installing ${missing[*]}"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

python3 -m pip install -q -e '.[dev]'

# Last: every capability present, or a table of what is missing and what brings it (exit 1).
python3 -m harness.cli doctor
