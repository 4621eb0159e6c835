"""Crash triage: signatures (patterns.py, signature.py), the crash database (db.py), replay and recheck
(replay.py), minimisation (minimize.py). Producers hand over a `Crash` with a `Reproducer` (crash.py)."""
