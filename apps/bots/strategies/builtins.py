"""Imports every built-in strategy module so each registers itself."""
