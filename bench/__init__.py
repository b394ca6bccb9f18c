"""Benchmarks of the served models, run from the project root:

    python -m bench.serving      # make bench: what dynamic batching buys, what serving costs
    python -m bench.soak         # make soak: ten minutes at 70% of capacity

inputs.py picks the texts, server.py starts the server under test, raw.py runs the same models
without HTTP, serving_report.py turns the serving measurements into the table and plot,
proctree.py reads a process tree's CPU and memory; the load itself goes through the load
engine every load test uses (loadgen.engine).
"""
