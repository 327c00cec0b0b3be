"""flyp_jax: FLYP, its baselines and attention transfer for CLIP in JAX/Flax."""

from flyp_jax import native_logs

__version__ = "0.1.0"

native_logs.install()  # TensorFlow's C++ start-up lines held to TF_CPP_MIN_LOG_LEVEL (native_logs.py says why)
