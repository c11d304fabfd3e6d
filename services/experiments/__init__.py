"""Experiment definitions and their results: the `experiments` schema. Not a running service:
the query API and the CLI manage definitions through `admin.py`; ingest and the query API read
them through `reads.py`; the SQL is `repository.py`'s. `results.py` reads the metrics facts per
variant (through `services.metrics.reads`) and analyses them, for the query API, its gauges and
the CLI.
"""
