"""feedbackloop services: ingest, query and the four consumers, plus the command line."""
