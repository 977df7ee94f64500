"""Layer 3 — launch: where the work runs (an embedded Ray, or a cluster)."""

from runyard.launch.ray_session import RaySession, ray_session

__all__ = ["RaySession", "ray_session"]
