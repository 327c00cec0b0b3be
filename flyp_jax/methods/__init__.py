"""Training methods: what each trains and its loss, over the one training loop in `flyp_jax.train`."""
