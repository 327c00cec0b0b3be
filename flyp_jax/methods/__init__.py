"""Training methods: what each trains and its loss, over the one training loop in `flyp_jax.train`.

A training method (flyp, ft, pretrain, attention_transfer; `train.TRAINING_METHODS`) is a module with these
functions. `train._train` calls them, and `flyp_jax.tpu_plan` the shape-only ones, to compile the same programs
for a TPU slice without data or weights. `config` is the run's ConfigDict, `model` the loop's module (a CLIP, or
what `load_model` gives), `mesh` the device mesh.

Required:
  extra_params(config, model, clip_params, mesh, evaluator) -> dict
      the trained parameters beside params['clip'] (FT's zero-shot 'head', attention transfer's 'student');
      {} for none. `evaluator` builds zero-shot heads (None when the run has no evaluation).
  extra_param_shapes(config, model) -> dict
      the same tree as jax.ShapeDtypeStructs, without computing it.
  batches(config, model, mesh, start_step) -> iterator of dict
      the global batches from step `start_step` on (the stream is exact on resume).
  batch_shapes(config, model) -> dict
      one batch as jax.ShapeDtypeStructs (global shapes).
  make_loss(config, model, mesh) -> loss_fn(params, batch, rng) -> (loss, metrics dict)
      the objective `train.make_train_step` differentiates (with gradient accumulation, clipping, donation).

Optional (the loop's default in brackets):
  load_model(config, workdir) -> (model, clip_params)         [train.load_clip: the config's CLIP]
  abstract_model(config) -> (model, shapes of clip_params)     [train.clip_model at model.variant / model.path]
  eval_model(config, model) -> module evaluated                [model]
  eval_params(config, params) -> (params of eval_model, head)  [params['clip'], params.get('head')]
  final_params(config, host params) -> (params, head) saved     [as eval_params]
  save_final(config, dst, params, head)                        [a CLIP checkpoint with head.npz]
  finish(config, evaluator, params, workdir, results) -> results  [results]: adds the method's own rows
      (attention transfer's teacher and ensemble) to the selected step's evaluation.

The other modules here (lp, wiseft, compare, few_shot) are commands that run or combine training runs; they have
a `run(config, workdir)` instead of these hooks.
"""
