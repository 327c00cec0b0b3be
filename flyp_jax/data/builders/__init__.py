"""The project's TFDS builders; importing this package registers them with TFDS."""

from flyp_jax.data.builders import domain_shapes, objectnet, rendered_sst2, wilds_fmow, wilds_iwildcam  # noqa: F401
