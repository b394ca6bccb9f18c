"""Client side of rnn-serve: a typed client and the one load engine (not part of the server image).

    from loadgen.client import Client                       # typed client, sync and async
    python -m loadgen --endpoint sentiment --concurrency 8 --out load.json   # load test

bench/serving.py and bench/soak.py drive their load through the same engine (loadgen.engine)
and transport (loadgen.transport); every percentile comes from loadgen.stats.
"""
