"""Benchmarks: figures measured on real agents, printed beside a reference system, never asserted.

Run each one as a module from the project root, e.g. `.venv/bin/python -m bench.failure_detection`;
bench/README.md lists them and the figures last measured.
"""
