"""Load tests and the serving benchmark.

* ``loadtest/locustfile.py``: Locust scenarios, every model over HTTP and gRPC, with a
  check of every response (``make loadtest``).
* ``python -m loadtest.bench``: the service against its ceiling (the SavedModel called
  in-process) and against a naive per-request server, over HTTP and gRPC (``make bench``).
"""
