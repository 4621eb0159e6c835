#!/usr/bin/env python3
"""Fuzz target api_sequence: each input goes to kp_fuzz_api_sequence (allocator/driver/kpfuzz.h)."""

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the harness package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from harness.fuzz.target import native_main

if __name__ == "__main__":
    native_main("kp_fuzz_api_sequence")
