"""Layer 6 — tracking: everything runyard writes to and reads from MLflow."""
