"""Checks against a running deployment (smoke tests)."""
