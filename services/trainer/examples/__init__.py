"""Training examples: `build` (pure: examples from a response and its feedback), `records`,
`redaction` and `dedupe` (pure), `rebuild` (what a consumer batch touched, built, deduplicated
and stored), `store` and `outbox` (their SQL)."""
