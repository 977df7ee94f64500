"""Layer 8 — cli: the `runyard` command."""
