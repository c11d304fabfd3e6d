"""Exports of the stored examples: `formats` (pure: lines of each format, and their checks),
`filters` (the selection's SQL), `stream` (JSONL through a cursor), `manifest`, `snapshots`,
`failure_patterns` (pure), and `object_exports` (increments to S3-compatible storage, with
`object_store`, `object_rows`, `object_parts`, `object_files` and `user_filter` (pure) for
its pieces and `object_erasure` for the rewrite after an erasure)."""
