"""flyp_jax: FLYP, its baselines and attention transfer for CLIP in JAX/Flax."""

__version__ = "0.1.0"
