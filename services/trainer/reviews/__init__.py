"""Reviews of responses in the console: `effects` (pure: a review event as the trainer stores
it) and `store` (the SQL that materializes them)."""
