#!/usr/bin/env bash
# Set up a fresh Debian machine (as root) for kpool: system packages, then the harness in editable
# mode with its dev tools (which builds libkpool). Idempotent: installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

# make and cc; clang for the fuzz/coverage variants; llvm for llvm-symbolizer/llvm-cov;
# strace for the syscall tests; the peer allocators the benchmark compares against; chromium renders the
# HTML report in its test.
PACKAGES=(build-essential make clang llvm strace libjemalloc2 libmimalloc2.0 libtcmalloc-minimal4 chromium)

missing=()
for pkg in "${PACKAGES[@]}"; do
	dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if ((${#missing[@]})); then
	echo "setup: installing ${missing[*]}"
	apt-get update -q
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

python3 -m pip install -q -e '.[dev]'
