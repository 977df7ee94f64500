"""Layer 7 — cli: the `runyard` command."""
