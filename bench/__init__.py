"""Reproducible benchmarks of stock-sync against the Back Market simulator (issue 6).

`python -m bench` starts the simulator and the service as subprocesses, runs every
scenario on a fresh database, and writes BENCHMARKS.md, bench/results/latest.json and
bench/results/sync_scaling.png. `python -m bench --help` lists the options.
"""
