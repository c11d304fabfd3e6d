"""Experiments: definitions, deterministic assignment and always-valid statistics. Pure."""
