"""From the HTTP process to the inference workers and back: the request queues (`queue`), the
response transport (`transport`), the gateway's hand-off of valid bodies (`fast_path`), the
dynamic batch loop in each worker (`loop`), the two LitAPIs that run a batch (`apis`), the
watchdog that turns a dead worker into answers and an exit code (`watchdog`), and the one module
that touches LitServe's private code (`litserve_internals`).
"""
