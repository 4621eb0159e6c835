"""kpool harness: load libkpool through ctypes, fuzz it, stress it, triage and report."""

__version__ = "0.1.0"
