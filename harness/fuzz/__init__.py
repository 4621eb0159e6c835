"""Fuzzing libkpool: atheris targets (executable scripts in this package) and their runner.

Native targets hand each input to a C entry point (allocator/driver/kpfuzz.h) in one ctypes call;
coverage and sanitizers are inside the C code. `kpool fuzz` (runner.py) builds the fuzz variant, sets
up the sanitizer runtime and runs libFuzzer's own modes (fork, merge, minimize); orphans.py finds the
crash inputs a killed run left unrecorded.
"""

TARGETS = ("api_sequence", "conf", "faults", "workload_yaml", "concurrent")
# Targets that fuzz a C entry point of the fuzz library, with its name.
NATIVE = {
    "api_sequence": "kp_fuzz_api_sequence",
    "conf": "kp_fuzz_conf",
    "faults": "kp_fuzz_faults",
    "concurrent": "kp_fuzz_concurrent",
}
# The longest `kpool fuzz --time` (and campaign --budget, all of which a fuzz job may get): libFuzzer's
# -max_total_time is a C int, and more wraps (2**32 + 1 s fuzzed for 1 s; 2**31 s for ever). 68 years.
MAX_SECONDS = 2**31 - 1
