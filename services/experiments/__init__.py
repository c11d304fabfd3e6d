"""Experiment definitions: the `experiments` schema. Not a running service: the query API and
the CLI manage definitions through `admin.py`; ingest and the query API read them through
`reads.py`; the SQL is `repository.py`'s."""
