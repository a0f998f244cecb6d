"""pocketqa's benchmarks: one harness (bench/harness.py) and suites that time pocketqa against its anchors.

Run ``python -m bench --help`` for the suites; bench/README.md explains each one.
"""
