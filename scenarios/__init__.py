"""Runnable experiments: each module has main(argv) and runs as `python -m scenarios.NAME`."""
