"""Speed, MFU and memory measurements of flyp_jax against the PyTorch reference; see benchmarks/RESULTS.md.

Every module here is a script (`python -m benchmarks.<name> --help`) that prints one JSON object; none of
them imports TensorFlow (the data pipeline, `flyp_jax.train`, `flyp_jax.evaluate`), so they run on
accelerator machines that only have JAX and PyTorch. Importing this package loads neither JAX nor PyTorch,
so a script can still set XLA_FLAGS before JAX loads.
"""

import os as _os

# JAX and PyTorch share one accelerator inside a benchmark process (measured side by side): JAX must not
# grab 75% of the device memory up front, as it does by default, or PyTorch runs out.
_os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
