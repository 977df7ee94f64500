"""Layer 4 — execute: planned trials → a Ray Tune run, tracked by the driver.

Import what you need from its modules (runyard.execute.job for the driver's side). This
package's own import stays empty on purpose: every trial process imports
runyard.execute.trainable, and must not pay for MLflow, SciPy and Ray Train on the way.
"""
