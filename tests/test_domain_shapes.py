"""The `domain_shapes` benchmark: offline build, splits, features, determinism, real domain shift, learnable classes.

The `small` config is built twice into temporary directories with the network blocked and read back through
`tfds.load`. `python tests/test_domain_shapes.py` prints the pixel-classifier table for the full-size splits
(the numbers in docs/domain_shapes.md).
"""

import hashlib
import socket

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from flyp_jax.data.builders import domain_shapes as ds

tfds.disable_progress_bar()  # display only: keeps pytest's output readable

NAME = "domain_shapes/small"
SMALL = {"pretrain": 500, "pretrain_val": 100, "train": 100, "validation": 100, **{f"test_{d}": 100 for d in ds.DOMAINS}}


class _NoNetwork(socket.socket):
  """A socket that cannot be created: any network access during the build fails loudly."""

  def __init__(self, *args, **kwargs):
    raise OSError("domain_shapes must build without network access")


def _build(data_dir) -> None:
  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(socket, "socket", _NoNetwork)
    mp.setattr(socket, "create_connection", _NoNetwork)
    tfds.builder(NAME, data_dir=str(data_dir)).download_and_prepare()


def _load(data_dir, raw: bool = False):
  """{split: dict of numpy arrays} for every split; `raw` keeps the encoded PNG bytes."""
  decoders = {"image": tfds.decode.SkipDecoding()} if raw else None
  splits = tfds.load(NAME, split=ds.SPLITS, data_dir=str(data_dir), batch_size=-1, download=False,
                     decoders=decoders)
  return {s: tfds.as_numpy(d) for s, d in zip(ds.SPLITS, splits)}


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
  """Two independent builds of the small config."""
  dirs = [tmp_path_factory.mktemp(f"domain_shapes_{i}") for i in range(2)]
  for d in dirs:
    _build(d)
  return dirs


@pytest.fixture(scope="module")
def data(builds):
  return _load(builds[0])


def _hashes(images: np.ndarray):
  return [hashlib.sha1(im.tobytes()).hexdigest() for im in images]


# ---------------------------------------------------------------------------------------------------------
# Simple image statistics and pixel classifiers (numpy only).


def _saturation(images: np.ndarray) -> np.ndarray:
  x = images.astype(np.float32) / 255.0
  mx, mn = x.max(-1), x.min(-1)
  return ((mx - mn) / (mx + 1e-6)).mean((1, 2))


def _domain_stats(images: np.ndarray) -> np.ndarray:
  """Per image: mean RGB, contrast, saturation, edge density, share of near-white and near-black pixels."""
  x = images.astype(np.float32) / 255.0
  g = x.mean(-1)
  edges = np.abs(np.diff(g, axis=1)).mean((1, 2)) + np.abs(np.diff(g, axis=2)).mean((1, 2))
  return np.stack([*x.mean((1, 2)).T, g.std((1, 2)), _saturation(images), edges, (g > 0.85).mean((1, 2)),
                   (g < 0.15).mean((1, 2))], 1)


def shape_features(images: np.ndarray, harmonics: int = 8) -> np.ndarray:
  """Pose-invariant edge features: where the edges lie around their centroid and their angular symmetry.

  Edge weights are squared gradients of the (slightly blurred) grey image. Relative to the edge centroid and
  the mean edge radius: a histogram of radii (a circle has one radius, a ring two, a star many), the angular
  Fourier magnitudes |sum w e^{ik phi}| of the inner and outer edges (k-fold symmetry: 4 for a square, 5 for
  a star) and of edge orientation relative to the radius. Invariant to position, rotation and scale by
  construction, so a classifier on them measures whether the shape is recoverable, not memorised poses.
  """
  g = images.astype(np.float32).mean(-1) / 255.0
  g = np.pad(g, ((0, 0), (1, 1), (1, 1)), mode="edge")
  g = 0.25 * g[:, :-2] + 0.5 * g[:, 1:-1] + 0.25 * g[:, 2:]
  g = 0.25 * g[:, :, :-2] + 0.5 * g[:, :, 1:-1] + 0.25 * g[:, :, 2:]
  gx, gy = np.zeros_like(g), np.zeros_like(g)
  gx[:, :, 1:-1], gy[:, 1:-1] = g[:, :, 2:] - g[:, :, :-2], g[:, 2:] - g[:, :-2]
  w = gx ** 2 + gy ** 2
  w = w / (w.sum((1, 2), keepdims=True) + 1e-8)
  c = np.arange(g.shape[1], dtype=np.float32)
  cy, cx = (w.sum(2) * c).sum(1), (w.sum(1) * c).sum(1)
  dy, dx = c[None, :, None] - cy[:, None, None], c[None, None, :] - cx[:, None, None]
  r, phi = np.sqrt(dx ** 2 + dy ** 2), np.arctan2(dy, dx)
  rn = r / ((w * r).sum((1, 2))[:, None, None] + 1e-6)
  bins = np.linspace(0.0, 2.0, 9)
  feats = [(w * ((rn >= a) & (rn < b))).sum((1, 2)) for a, b in zip(bins[:-1], bins[1:])]
  feats.append((w * rn ** 2).sum((1, 2)))
  for band in (rn < 1.0, rn >= 1.0):
    wb = w * band
    for k in range(1, harmonics + 1):
      feats.append(np.abs((wb * np.exp(1j * k * phi)).sum((1, 2))) / (wb.sum((1, 2)) + 1e-8))
  orientation = np.arctan2(gy, gx) - phi
  for k in range(1, 5):
    feats.append(np.abs((w * np.exp(1j * k * orientation)).sum((1, 2))))
  return np.stack(feats, 1).astype(np.float32)


def raw_pixels(images: np.ndarray) -> np.ndarray:
  return images.reshape(len(images), -1).astype(np.float32) / 255.0


def nearest_class_mean(f_train, y_train, f_test, classes: int) -> np.ndarray:
  """Predictions of the nearest class mean, features standardised on the training set."""
  m, s = f_train.mean(0), f_train.std(0) + 1e-6
  a, b = (f_train - m) / s, (f_test - m) / s
  mu = np.stack([a[y_train == k].mean(0) for k in range(classes)])
  return np.argmin(((b[:, None] - mu[None]) ** 2).sum(-1), 1)


def fit_softmax(a, y_train, w, b, steps: int, lr: float, l2: float):
  """Softmax regression weights after `steps` full-batch gradient steps from (w, b)."""
  y = np.eye(w.shape[1], dtype=np.float32)[y_train]
  for _ in range(steps):
    z = a @ w + b
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    grad = (p - y) / len(a)
    w = w - lr * (a.T @ grad + l2 * w)
    b = b - lr * grad.sum(0)
  return w, b


def logistic_regression(f_train, y_train, f_test, classes: int, steps: int = 500, lr: float = 0.5,
                        l2: float = 1e-3) -> np.ndarray:
  """Predictions of softmax regression trained by full-batch gradient descent on standardised features."""
  m, s = f_train.mean(0), f_train.std(0) + 1e-6
  w, b = fit_softmax((f_train - m) / s, y_train, np.zeros((f_train.shape[1], classes), np.float32),
                     np.zeros(classes, np.float32), steps, lr, l2)
  return np.argmax(((f_test - m) / s) @ w + b, 1)


def classifier_table(train, tests) -> dict:
  """{(features, classifier): {domain: accuracy}} for classifiers fit on `train` = (images, labels)."""
  table = {}
  for fname, feat in (("raw pixels", raw_pixels), ("shape features", shape_features)):
    f_train = feat(train[0])
    for cname, clf in (("nearest class mean", nearest_class_mean), ("logistic regression", logistic_regression)):
      if fname == "raw pixels" and cname == "logistic regression" and len(train[1]) > 1000:
        continue  # 3072-dimensional full-batch regression on thousands of images takes minutes here
      # Fit once, predict every domain's test split in one call.
      pred = clf(f_train, train[1], np.concatenate([feat(x) for x, _ in tests.values()]), len(ds.CLASSNAMES))
      ends = np.cumsum([len(y) for _, y in tests.values()])
      table[fname, cname] = {d: float((p == y).mean())
                             for (d, (_, y)), p in zip(tests.items(), np.split(pred, ends[:-1]))}
  return table


def _print_table(table) -> None:
  print(f"\n{'features, classifier':42s}" + "".join(f"{d + (' (ID)' if d == ds.ID_DOMAIN else ''):>14s}"
                                                     for d in ds.DOMAINS))
  for (fname, cname), accs in table.items():
    print(f"{fname + ', ' + cname:42s}" + "".join(f"{accs[d]:14.3f}" for d in ds.DOMAINS))


# ---------------------------------------------------------------------------------------------------------
# Tests.


def test_constants():
  assert len(ds.CLASSNAMES) == len(set(ds.CLASSNAMES)) == 10
  assert ds.DOMAINS == ["photo", "sketch", "cartoon", "painting", "clutter"] and ds.ID_DOMAIN == "photo"
  assert all(t.count("{}") == 1 for t in ds.TEMPLATES) and len(ds.TEMPLATES) >= 8
  for d in ds.DOMAINS:  # every domain's wording is among the zero-shot templates
    assert any(ds.DOMAIN_PHRASES[d] in t or d in t for t in ds.TEMPLATES), d
  assert ds.canonical_caption(3, "clutter") == "a cluttered photo of a star."
  assert set(ds.SPLITS) == set(SMALL)
  builder = tfds.builder("domain_shapes", data_dir="/nonexistent")  # configs only, nothing is built
  assert builder.builder_config.split_sizes() == {
      "pretrain": 20000, "pretrain_val": 2000, "train": 5000, "validation": 1000,
      **{f"test_{d}": 1000 for d in ds.DOMAINS}}
  # The demo CLIP's pretraining data: the same splits with ten times the pretraining pairs.
  big = tfds.builder("domain_shapes/pretrain_200k", data_dir="/nonexistent").builder_config.split_sizes()
  assert big == {**builder.builder_config.split_sizes(), "pretrain": 200000}
  assert builder.info.features["image"].shape == (32, 32, 3)
  assert tfds.builder("domain_shapes/default_64px", data_dir="/nonexistent").info.features["image"].shape == (
      64, 64, 3)


def test_splits_features_and_domains(builds, data):
  info = tfds.builder(NAME, data_dir=str(builds[0])).info
  assert info.features["label"].names == ds.CLASSNAMES
  assert info.features["domain"].names == ds.DOMAINS
  assert {s: info.splits[s].num_examples for s in ds.SPLITS} == SMALL
  for split, n in SMALL.items():
    ex = data[split]
    assert ex["image"].shape == (n, 32, 32, 3) and ex["image"].dtype == np.uint8, split
    assert ex["label"].min() >= 0 and ex["label"].max() < len(ds.CLASSNAMES)
    assert ex["domain"].min() >= 0 and ex["domain"].max() < len(ds.DOMAINS)
    # Balanced by construction: every class equally often.
    assert np.all(np.bincount(ex["label"], minlength=10) == n // 10), split
    if split in ("train", "validation"):
      assert np.all(ex["domain"] == ds.DOMAINS.index(ds.ID_DOMAIN)), split
    elif split.startswith("test_"):
      assert np.all(ex["domain"] == ds.DOMAINS.index(split[len("test_"):])), split
    else:  # pretrain, pretrain_val: every (class, domain) pair equally often
      pairs = np.bincount(ex["label"] * len(ds.DOMAINS) + ex["domain"], minlength=50)
      assert np.all(pairs == n // 50)
    # Images are not blank and not all alike.
    assert ex["image"].std() > 20 and len(set(_hashes(ex["image"]))) == n, split


def test_captions(data):
  for split in SMALL:
    ex = data[split]
    captions = [c.decode() for c in ex["caption"]]
    for c, label, domain in zip(captions, ex["label"], ex["domain"]):
      assert ds.CLASSNAMES[label] in c.split(" ") or ds.CLASSNAMES[label] + "." in c.split(" ") or (
          c == ds.CLASSNAMES[label]), (split, c)
      if split not in ds.PRETRAIN_SPLITS:
        assert c == ds.canonical_caption(label, ds.DOMAINS[domain])
  # The held-out pretraining split shares no image with the pretraining split.
  assert not set(_hashes(data["pretrain"]["image"])) & set(_hashes(data["pretrain_val"]["image"]))
  pretrain = [c.decode() for c in data["pretrain"]["caption"]]
  assert len(set(pretrain)) > 250  # varied, not one caption per (class, domain)
  # Most pretraining captions name their domain (by one of its words); some deliberately do not.
  words = {d: ds._DOMAIN_WORDS[d] + ds._STYLE_ADJECTIVES[d] + ds._STYLE_NOUNS[d] + [ds.DOMAIN_PHRASES[d]]
           for d in ds.DOMAINS}
  named = [any(w in c for w in words[ds.DOMAINS[d]]) for c, d in zip(pretrain, data["pretrain"]["domain"])]
  assert 0.6 < np.mean(named) < 0.98


def test_deterministic_builds_and_generator(builds, data):
  a, b = _load(builds[0], raw=True), _load(builds[1], raw=True)
  for split in SMALL:
    assert list(a[split]["image"]) == list(b[split]["image"]), split  # identical PNG bytes, same order
    assert list(a[split]["caption"]) == list(b[split]["caption"]), split
  # The stored images are exactly the generator's (PNG round trip is lossless), whatever the batching.
  generated = np.concatenate([x["image"] for x in ds.generate_batches("test_sketch", 0, 100)])
  assert sorted(_hashes(generated)) == sorted(_hashes(data["test_sketch"]["image"]))
  one = next(ds.generate("test_sketch", 37, 38))[1]
  np.testing.assert_array_equal(one["image"], generated[37])


def test_splits_share_no_images(data):
  seen = {}
  for split in SMALL:
    for h in _hashes(data[split]["image"]):
      assert h not in seen, f"an image of {split} is also in {seen.get(h)}"
      seen[h] = split


def test_domains_really_differ(data):
  tests = {d: data[f"test_{d}"]["image"] for d in ds.DOMAINS}
  sat = {d: float(_saturation(x).mean()) for d, x in tests.items()}
  print("\nmean saturation:", {d: round(v, 3) for d, v in sat.items()})
  assert sat["sketch"] < 0.5 * sat["photo"]  # pencil on paper vs coloured, lit objects
  # A nearest-centroid classifier on 10 simple image statistics tells the domains apart.
  stats = {d: _domain_stats(x) for d, x in tests.items()}
  f_train = np.concatenate([s[::2] for s in stats.values()])
  y_train = np.repeat(np.arange(5), [len(s[::2]) for s in stats.values()])
  f_test = np.concatenate([s[1::2] for s in stats.values()])
  y_test = np.repeat(np.arange(5), [len(s[1::2]) for s in stats.values()])
  acc = float((nearest_class_mean(f_train, y_train, f_test, 5) == y_test).mean())
  print(f"domain accuracy of nearest centroid on image statistics: {acc:.3f}")
  assert acc > 0.8


@pytest.mark.slow
def test_classes_learnable_in_id_domain_and_shift(data):
  train = (data["train"]["image"], data["train"]["label"])
  tests = {d: (data[f"test_{d}"]["image"], data[f"test_{d}"]["label"]) for d in ds.DOMAINS}
  table = classifier_table(train, tests)
  _print_table(table)
  # Robust at 100 training and 100 test images (chance 0.1; measured about 0.4).
  assert table["shape features", "logistic regression"]["photo"] > 0.25
  assert table["shape features", "nearest class mean"]["photo"] > 0.25


def test_png_encoder_round_trip():
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (3, 7, 5, 3), dtype=np.uint8)
  images[1] = 200  # a flat image (compresses to almost nothing) and two incompressible ones
  for image, png in zip(images, ds.encode_png(images)):
    np.testing.assert_array_equal(tf.io.decode_png(png, channels=3).numpy(), image)


def test_64px_rendering():
  batch = next(ds.generate_batches("test_painting", 0, 5, image_size=64))
  assert batch["image"].shape == (5, 64, 64, 3) and batch["image"].std() > 10


def linear_wise_ft(pretrain, train, tests, alphas=(0.0, 0.25, 0.5, 0.75, 1.0)) -> dict:
  """A linear stand-in for pretrain -> fine-tune -> weight interpolation; {alpha: {domain: accuracy}}.

  Features: 16x16 average-pooled pixels plus `shape_features`. "Pretrained" weights are fit on the labelled
  pretraining split (every domain), "fine-tuned" weights continue from them on the photo training split, and
  alpha interpolates the two (WiSE-FT). It only shows that the data carry the ID-specific shortcut the
  phenomenon needs; the CLIP experiments are run by the training job.
  """
  def feats(x):
    pooled = x.astype(np.float32).reshape(len(x), 16, x.shape[1] // 16, 16, x.shape[2] // 16, 3).mean((2, 4))
    return np.concatenate([pooled.reshape(len(x), -1) / 255.0, shape_features(x)], 1)

  f_pre, f_train = feats(pretrain[0]), feats(train[0])
  m, s = f_pre.mean(0), f_pre.std(0) + 1e-6
  classes = len(ds.CLASSNAMES)
  zero = (np.zeros((f_pre.shape[1], classes), np.float32), np.zeros(classes, np.float32))
  w0, b0 = fit_softmax((f_pre - m) / s, pretrain[1], *zero, steps=300, lr=0.3, l2=1e-4)
  w1, b1 = fit_softmax((f_train - m) / s, train[1], w0, b0, steps=300, lr=0.3, l2=1e-4)
  f_tests = {d: ((feats(x) - m) / s, y) for d, (x, y) in tests.items()}
  return {a: {d: float((np.argmax(f @ ((1 - a) * w0 + a * w1) + (1 - a) * b0 + a * b1, 1) == y).mean())
              for d, (f, y) in f_tests.items()} for a in alphas}


if __name__ == "__main__":
  # Full-size measurements for the docs, on the default config's splits (generated in memory, not via TFDS).
  def load(split, n):
    batches = list(ds.generate_batches(split, 0, n))
    return np.concatenate([b["image"] for b in batches]), np.concatenate([b["label"] for b in batches])

  full_train, full_tests = load("train", 5000), {d: load(f"test_{d}", 1000) for d in ds.DOMAINS}
  _print_table(classifier_table(full_train, full_tests))
  print("\nlinear pretrain -> fine-tune -> interpolate (alpha = weight of the fine-tuned model)")
  for alpha, accs in linear_wise_ft(load("pretrain", 20000), full_train, full_tests).items():
    ood = np.mean([v for d, v in accs.items() if d != ds.ID_DOMAIN])
    print(f"alpha={alpha:.2f} " + " ".join(f"{d}={v:.3f}" for d, v in accs.items()) + f"  OOD mean={ood:.3f}")
