"""runyard: YAML job specs run on Ray, tracked in MLflow."""

__version__ = "0.1.0"
