"""Checks against anchors that are not timings; each module's docstring says how to run it."""
