"""CLIP model shapes, attention maps in and out, compute dtypes, remat, and compilation caching."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from flyp_jax import models
from flyp_jax.tokenizer import tokenize, trim_padding

VARIANTS = {  # name -> (image size, embed dim, vision width, vision layers, text width)
    "ViT-B/32": (224, 512, 768, 12, 512),
    "ViT-B/16": (224, 512, 768, 12, 512),
    "ViT-L/14": (224, 768, 1024, 24, 768),
    "ViT-L/14@336": (336, 768, 1024, 24, 768),
}


@pytest.fixture(scope="module")
def tiny():
  model = models.create_model("ViT-T/8")
  params = jax.jit(models.init_params, static_argnums=0)(model, jax.random.PRNGKey(0))
  images = jax.random.normal(jax.random.PRNGKey(1), (3, 32, 32, 3))
  tokens = jnp.asarray(tokenize(["a photo of a cat", "a dog", "a photo of a small red car."]))
  return model, params, images, tokens


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_named_variants_have_published_shapes(name):
  image, embed, vwidth, vlayers, twidth = VARIANTS[name]
  model = models.create_model(name)
  params = jax.eval_shape(lambda: models.init_params(model, jax.random.PRNGKey(0)))
  assert params["visual"]["positional_embedding"].shape == ((image // model.config.patch_size) ** 2 + 1, vwidth)
  assert params["visual"]["proj"].shape == (vwidth, embed)
  assert params["text"]["text_projection"].shape == (twidth, embed)
  assert len(params["visual"]["transformer"]) == vlayers
  assert params["text"]["token_embedding"]["embedding"].shape == (49408, twidth)
  n = sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(params))
  published = {"ViT-B/32": 151.3e6, "ViT-B/16": 149.6e6, "ViT-L/14": 427.6e6, "ViT-L/14@336": 427.9e6}[name]
  assert abs(n - published) / published < 0.005, n


def test_open_clip_style_names_and_bad_names():
  assert models.get_config("ViT-B-16") == models.get_config("ViT-B/16")
  assert models.get_config("ViT-B/16-gelu").activation == "gelu"
  with pytest.raises(ValueError, match="unknown CLIP variant"):
    models.get_config("RN50")
  with pytest.raises(ValueError, match="not divisible"):
    models.get_config("ViT-T/8", vision_heads=3)


@pytest.mark.slow
def test_encoders_and_logits(tiny):
  model, params, images, tokens = tiny
  img = model.apply({"params": params}, images, method=model.encode_image)
  txt = model.apply({"params": params}, tokens, method=model.encode_text)
  assert img.shape == (3, 64) and txt.shape == (3, 64) and img.dtype == jnp.float32
  logits, aux = model.apply({"params": params}, images, tokens)
  expected = np.exp(np.log(1 / 0.07)) * models.normalize(img) @ models.normalize(txt).T
  np.testing.assert_allclose(logits, expected, rtol=1e-5)
  np.testing.assert_allclose(np.linalg.norm(aux["image_features"], axis=-1), 1, rtol=1e-6)


def test_text_is_read_at_end_of_text_token(tiny):
  model, params, _, tokens = tiny
  # Padding after the end-of-text token must not change anything (causal attention, pooled at eot).
  garbage = tokens.at[0, 10:].set(123)
  f = lambda t: model.apply({"params": params}, t, method=model.encode_text)
  np.testing.assert_allclose(f(garbage)[0], f(tokens)[0], rtol=1e-6)
  # A shorter context with the same prefix gives the same features, up to float32 rounding: the two shapes sum
  # in other orders (seen: 1.7e-6 on a feature of 0.06, with features up to 1.6), so the tolerance scales with
  # the features' size; attention that is not causal moves them by ~0.1.
  full = np.asarray(f(tokens))
  np.testing.assert_allclose(f(tokens[:, :16]), full, rtol=1e-5, atol=1e-5 * np.abs(full).max())


def test_trimmed_prompts_give_the_same_features(tiny):
  model, params, _, tokens = tiny
  trimmed = trim_padding(tokens)
  longest = int((np.asarray(tokens) != 0).sum(1).max())
  assert trimmed.shape == (3, longest) and longest < tokens.shape[1]
  np.testing.assert_array_equal(trimmed, np.asarray(tokens)[:, :longest])
  f = jax.jit(lambda t: model.apply({"params": params}, jnp.asarray(t), method=model.encode_text))
  np.testing.assert_allclose(f(trimmed), f(tokens), rtol=1e-5, atol=1e-6)
  # One column shorter cuts the longest prompt's end-of-text token: its features change.
  assert not np.allclose(f(trimmed[:, :-1])[2], f(tokens)[2], atol=1e-3)
  with pytest.raises(ValueError, match=r"\[N, L\]"):
    trim_padding(np.zeros(5, np.int32))


@pytest.mark.slow
def test_last_block_at_the_pooled_token_gives_the_same_features_and_gradients(tiny):
  model, params, images, tokens = tiny
  # Rows whose end-of-text token sits early, late, and at the very last position.
  tokens = jnp.concatenate([tokens, jnp.asarray(tokenize(["word " * 100]))])
  assert int(jnp.argmax(tokens[-1])) == tokens.shape[1] - 1
  pairs = {"image": (lambda p: model.apply({"params": p}, images, method=model.encode_image),
                     lambda p: model.apply({"params": p}, images, method=model.image_tower)[0]),
           "text": (lambda p: model.apply({"params": p}, tokens, method=model.encode_text),
                    lambda p: model.apply({"params": p}, tokens, method=lambda m, t: m.text(t)[0]))}
  for tower, (pooled, full) in pairs.items():
    # Compiled, as training runs them (and op by op, the gradients take minutes on CPU).
    np.testing.assert_allclose(jax.jit(pooled)(params), jax.jit(full)(params), rtol=1e-5, atol=1e-6, err_msg=tower)
    grad = lambda f: jax.jit(jax.grad(lambda p: jnp.sum(jnp.sin(f(p)))))(params)
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(grad(pooled)),
                            jax.tree_util.tree_leaves(grad(full))):
      if "'key']['bias'" in jax.tree_util.keystr(path):
        continue  # attention is invariant to the key bias: its gradient is rounding noise around zero
      # float32 rounding of sums over tokens: compared at the scale of each leaf's largest entry
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=2e-6 * float(jnp.abs(b).max()) + 1e-9,
                                 err_msg=f"{tower} {jax.tree_util.keystr(path)}")
  with pytest.raises(ValueError, match="pool_index cannot be combined"):
    model.apply({"params": params}, images, method=lambda m, x: m.visual(x, return_attention=True, pool_only=True))


def test_patch_embedding_is_the_strided_convolution():
  import flax.linen as nn
  from flyp_jax.models.clip import PatchEmbedding
  conv = nn.Conv(16, (8, 8), strides=(8, 8), padding="VALID", use_bias=False)
  ours = PatchEmbedding(8, 16)
  images = jax.random.normal(jax.random.PRNGKey(2), (2, 32, 24, 3))
  params = conv.init(jax.random.PRNGKey(3), images)
  np.testing.assert_array_equal(ours.init(jax.random.PRNGKey(3), images)["params"]["kernel"],
                                params["params"]["kernel"])  # same initial values for a seed
  expected = conv.apply(params, images).reshape(2, 4 * 3, 16)  # row-major patch order
  np.testing.assert_allclose(ours.apply(params, images), expected, rtol=1e-5, atol=1e-5)
  grad = lambda f: jax.grad(lambda p: jnp.sum(jnp.sin(f(p))))(params)["params"]["kernel"]
  np.testing.assert_allclose(grad(lambda p: ours.apply(p, images)),
                             grad(lambda p: conv.apply(p, images).reshape(2, 12, 16)), rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_attention_maps_out_and_in(tiny):
  model, params, images, _ = tiny
  feats, aux = model.apply({"params": params}, images, return_attention=True, method=model.image_tower)
  maps = aux["attention"]
  assert len(maps) == 2 and maps[0].shape == (3, 2, 17, 17)
  np.testing.assert_allclose(np.sum(maps[1], -1), 1, rtol=1e-5)
  # Returning maps uses the explicit softmax path; it must agree with the fused default path.
  np.testing.assert_allclose(feats, model.apply({"params": params}, images, method=model.encode_image),
                             rtol=1e-5, atol=1e-6)
  # Feeding a model its own maps reproduces it; feeding another's maps changes the output and the maps used
  # are exactly the ones given.
  same, _ = model.apply({"params": params}, images, maps, method=model.image_tower)
  np.testing.assert_allclose(same, feats, rtol=1e-5, atol=1e-6)
  other = models.init_params(model, jax.random.PRNGKey(7))
  _, other_aux = model.apply({"params": other}, images, return_attention=True, method=model.image_tower)
  copied, copied_aux = model.apply({"params": params}, images, other_aux["attention"], True,
                                   method=model.image_tower)
  assert not np.allclose(copied, feats, atol=1e-3)
  for used, given in zip(copied_aux["attention"], other_aux["attention"]):
    np.testing.assert_array_equal(used, given)
  # Some layers given, others computed.
  partial, partial_aux = model.apply({"params": params}, images, (other_aux["attention"][0], None), True,
                                     method=model.image_tower)
  np.testing.assert_array_equal(partial_aux["attention"][0], other_aux["attention"][0])
  assert not np.allclose(partial_aux["attention"][1], other_aux["attention"][1], atol=1e-4)
  with pytest.raises(ValueError, match="attention maps for 2 layers"):
    model.apply({"params": params}, images, maps[:1], method=model.image_tower)


@pytest.mark.slow
def test_no_gradient_reaches_queries_and_keys_when_maps_are_given(tiny):
  model, params, images, _ = tiny
  _, aux = model.apply({"params": params}, images, return_attention=True, method=model.image_tower)
  maps = jax.lax.stop_gradient(aux["attention"])
  loss = lambda p: jnp.sum(model.apply({"params": p}, images, maps, method=model.image_tower)[0] ** 2)
  g = jax.grad(loss)(params)["visual"]["transformer"]["resblocks_0"]["attn"]
  assert float(jnp.abs(g["query"]["kernel"]).max()) == 0 and float(jnp.abs(g["key"]["kernel"]).max()) == 0
  assert float(jnp.abs(g["value"]["kernel"]).max()) > 0


def test_bfloat16_compute_keeps_float32_params_and_stays_close(tiny):
  _, params, images, tokens = tiny
  bf16 = models.create_model("ViT-T/8", dtype="bfloat16")
  shapes = jax.eval_shape(lambda: models.init_params(bf16, jax.random.PRNGKey(0)))
  assert all(x.dtype == jnp.float32 for x in jax.tree_util.tree_leaves(shapes))
  f32 = models.create_model("ViT-T/8")
  for method in ("encode_image", "encode_text"):
    x = images if method == "encode_image" else tokens
    lo = jax.jit(lambda p: bf16.apply({"params": p}, x, method=getattr(bf16, method)))(params)
    hi = jax.jit(lambda p: f32.apply({"params": p}, x, method=getattr(f32, method)))(params)
    assert lo.dtype == jnp.float32
    assert np.linalg.norm(lo - hi) / np.linalg.norm(hi) < 0.05


def test_remat_gives_same_values_and_gradients(tiny):
  _, params, images, tokens = tiny
  def grads(model):
    loss = lambda p: model.apply({"params": p}, images, tokens)[0].sum()
    return jax.jit(jax.value_and_grad(loss))(params)
  v1, g1 = grads(models.create_model("ViT-T/8"))
  for remat in (True, "dots_saveable"):
    v2, g2 = grads(models.create_model("ViT-T/8", remat=remat))
    np.testing.assert_allclose(v1, v2, rtol=1e-6)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), g1, g2)


def test_a_remat_policy_chooses_what_the_backward_pass_recomputes(tiny):
  _, params, images, tokens = tiny
  def matmuls(remat):
    model = models.create_model("ViT-T/8", remat=remat)
    loss = lambda p: model.apply({"params": p}, images, tokens)[0].sum()
    return jax.jit(jax.grad(loss)).lower(params).as_text().count("stablehlo.dot_general")
  plain, whole, dots = matmuls(False), matmuls(True), matmuls("dots_saveable")
  # Recomputing every block runs its forward matmuls again; keeping the matmuls' outputs does not.
  assert whole > plain and dots == plain
  config = ml_collections.ConfigDict({"remat": True, "remat_policy": "dots_saveable"})
  assert models.remat_setting(config) == "dots_saveable"
  config.remat_policy = ""
  assert models.remat_setting(config) is True
  config.remat = False
  assert models.remat_setting(config) is False


def test_second_call_does_not_recompile(tiny):
  model, params, images, _ = tiny
  encode = jax.jit(lambda p, x: model.apply({"params": p}, x, method=model.encode_image))
  encode(params, images)
  before = encode._cache_size()
  encode(params, images + 1.0)
  assert encode._cache_size() == before == 1


def test_wrong_image_size_is_a_clear_error(tiny):
  model, params, _, _ = tiny
  with pytest.raises(ValueError, match=r"expected images of shape \[B, 32, 32, 3\]"):
    model.apply({"params": params}, jnp.zeros((1, 3, 32, 32)), method=model.encode_image)
