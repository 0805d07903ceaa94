"""Test doubles that speak real exchange protocols over loopback (used by the test suite and bench/stream.py)."""
