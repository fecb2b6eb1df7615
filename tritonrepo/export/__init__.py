"""Exports of a plan to other deployment tools (dstack configurations), rendered as text."""
