"""Linear probe: L-BFGS logistic regression against scikit-learn, the l2 choice, compilation and shapes.

Objective correspondence. We minimise  J(W, b) = (1/N) sum_i CE_i + (l2/2) ||W||^2;  scikit-learn's
multinomial LogisticRegression minimises  S(W, b) = (1/2) ||W||^2 + C sum_i CE_i  (bias unpenalised with lbfgs).
J / l2 = (1/(l2 N)) sum_i CE_i + (1/2) ||W||^2 = S  when  C = 1 / (l2 N),  so both have the same minimiser and
J = l2 * S at every point. The bias is only defined up to a shared constant (softmax is shift invariant), so
biases are compared after centring.
"""

import inspect

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from flyp_jax.commands import lp


def _blobs(rng, n, d=10, c=4, noise=1.0):
  """Gaussian blobs, L2-normalised as the probe expects: x [n, d] float32, y [n] int."""
  mu = rng.normal(size=(c, d))
  y = rng.integers(0, c, n)
  x = mu[y] + noise * rng.normal(size=(n, d))
  return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), y


def _sklearn(x, y, l2):
  kwargs = dict(C=1.0 / (l2 * len(x)), tol=1e-12, max_iter=10_000)
  if "multi_class" in inspect.signature(LogisticRegression).parameters:  # gone in sklearn >= 1.7 (always multinomial)
    kwargs["multi_class"] = "multinomial"
  return LogisticRegression(**kwargs).fit(x.astype(np.float64), y)


@pytest.mark.parametrize("l2", [1e-3, 1e-1])
def test_matches_sklearn(l2):
  x, y = _blobs(np.random.default_rng(0), 400)
  kernel, bias = lp.fit_logistic_regression(x, y, 4, l2=l2)
  sk = _sklearn(x, y, l2)
  sk_kernel, sk_bias = sk.coef_.T, sk.intercept_

  ours = float(lp.objective(kernel, bias, x, y, l2))
  theirs = float(lp.objective(sk_kernel.astype(np.float32), sk_bias.astype(np.float32), x, y, l2))
  assert ours == pytest.approx(theirs, rel=1e-5)
  kernel, bias = np.asarray(kernel), np.asarray(bias)
  assert np.linalg.norm(kernel - sk_kernel) / np.linalg.norm(sk_kernel) < 1e-3
  np.testing.assert_allclose(bias - bias.mean(), sk_bias - sk_bias.mean(), atol=1e-3)
  np.testing.assert_array_equal(np.argmax(x @ kernel + bias, -1), sk.predict(x))


def _stretched(rng, n):
  """Two classes, mean difference along e1 but shared noise along e1 + e2: the discriminative direction
  e1 - e2 separates them almost perfectly, while the class-mean direction that heavy l2 drifts to does not."""
  y = rng.integers(0, 2, n)
  t = rng.normal(size=n)
  x = 0.01 * rng.normal(size=(n, 4))
  x[:, 0] += 0.1 * y + t
  x[:, 1] += t
  x[:, 3] += 1.0
  return x.astype(np.float32), y


def _noisy(rng, mu, n, flip=0.4):
  """Few, noisy, high-dimensional examples with 40% of labels resampled: small l2 overfits."""
  y = rng.integers(0, mu.shape[0], n)
  x = mu[y] + rng.normal(size=(n, mu.shape[1]))
  y = np.where(rng.random(n) < flip, rng.integers(0, mu.shape[0], n), y)
  return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), y


def test_validation_picks_sensible_l2():
  rng = np.random.default_rng(0)
  clean = lp.fit_with_validation(*_stretched(rng, 200), *_stretched(rng, 2000), 2)
  mu = rng.normal(size=(4, 64))
  noisy = lp.fit_with_validation(*_noisy(rng, mu, 100), *_noisy(rng, mu, 2000), 4)
  assert clean["l2"] <= 1e-3 and clean["val_top1"] > 0.99
  assert noisy["l2"] >= 1e-2 > clean["l2"]
  for r in (clean, noisy):
    assert [l2 for l2, _ in r["grid"]] == pytest.approx(np.logspace(-6, 2, 9))
    assert r["val_top1"] == max(acc for _, acc in r["grid"]) == dict(r["grid"])[r["l2"]]
  # Ties go to the larger l2: both of these fit the clean problem perfectly.
  tie = lp.fit_with_validation(*_stretched(rng, 200), *_stretched(rng, 500), 2, l2_grid=(1e-6, 1e-5))
  assert [acc for _, acc in tie["grid"]] == [1.0, 1.0] and tie["l2"] == 1e-5


def test_one_compilation_across_sweep_and_shapes():
  x, y = _blobs(np.random.default_rng(1), 96, d=6, c=3)
  before = lp._fit._cache_size()
  out = lp.fit_with_validation(x[:64], y[:64], x[64:], y[64:], 3, l2_grid=(1e-4, 1e-2, 1.0))
  assert lp._fit._cache_size() == before + 1  # one compilation for the three l2 values
  assert out["kernel"].shape == (6, 3) and out["bias"].shape == (3,)
  assert out["kernel"].dtype == np.float32 and out["bias"].dtype == np.float32
  assert isinstance(out["l2"], float) and 0.0 <= out["val_top1"] <= 1.0 and len(out["grid"]) == 3
  # float64 inputs are cast: still float32 out, and no new compilation.
  kernel, bias = lp.fit_logistic_regression(x[:64].astype(np.float64), y[:64], 3, l2=0.5, max_iter=50)
  assert kernel.dtype == bias.dtype == np.float32 and lp._fit._cache_size() == before + 1


# ------------------------------------------------------------------------- LP-FT's probe on raw features
def reference_raw_probe(train_x, train_y, val_x, val_y, Cs, max_iter=200):
  """AnanyaKumar/transfer_learning unlabeled_extrapolation/log_reg_sk.py `main`, transcribed: `normalize_features`
  (one scalar mean and std of the training matrix), `test_log_reg_warm_starting` (one warm-started
  LogisticRegression swept over ascending C, the first C of the best validation accuracy kept),
  `inv_normalize_weights` and `pad_head` (zero rows for classes absent from training). Float64 inputs (scikit-learn
  >= 1.9 fits float32 ones in float32)."""
  mean, std = np.mean(train_x), np.std(train_x)
  tx, vx = (train_x - mean) / std, (val_x - mean) / std
  clf = LogisticRegression(random_state=0, warm_start=True, max_iter=max_iter)
  best_acc, best, accs = -1.0, None, []
  for C in Cs:
    clf.C = C
    clf.fit(tx, train_y)
    acc = np.mean(clf.predict(vx) == val_y)
    accs.append(acc)
    if acc > best_acc:
      best_acc, best = acc, (C, clf.coef_.copy(), clf.intercept_.copy(), clf.classes_.copy())
  C, coef, intercept, classes = best
  new_coef = coef / std
  new_intercept = intercept - np.matmul(coef, mean / std * np.ones(coef.shape[1]))
  padded_coef, padded_intercept = np.zeros((np.max(classes) + 1, coef.shape[1])), np.zeros(np.max(classes) + 1)
  for i, c in enumerate(classes):
    padded_coef[c], padded_intercept[c] = new_coef[i], new_intercept[i]
  return C, padded_coef, padded_intercept, accs


def test_the_raw_feature_probe_follows_log_reg_sk():
  """Raw features (offset 3, scale 5, as encode_image's are neither centred nor unit), 5 classes of which class 2
  never occurs in training: the same C chosen from the same held-out accuracies, zero weights for class 2, and the
  raw-feature head's logits equal to scikit-learn's up to the two solvers' stopping points."""
  rng = np.random.default_rng(3)
  centres = rng.normal(0, 1.0, (5, 8))

  def sample(n, classes):
    y = rng.choice(classes, n)
    return (3 + 5 * (centres[y] + 1.2 * rng.normal(size=(n, 8)))), y

  train_x, train_y = sample(300, [0, 1, 3, 4])
  val_x, val_y = sample(300, [0, 1, 2, 3, 4])
  Cs = np.logspace(-5, 1, 7)
  C, coef, intercept, sk_accs = reference_raw_probe(train_x, train_y, val_x, val_y, Cs)
  fit = lp.fit_raw_probe(train_x.astype(np.float32), train_y, val_x.astype(np.float32), val_y, 5,
                         l2_grid=lp.l2_from_C(Cs, len(train_y)), warm_start=True, max_iter=200)
  assert len(set(sk_accs)) > 2  # the choice of C matters on this data
  np.testing.assert_allclose(sorted(a for _, a in fit["grid"])[::-1], sorted(sk_accs)[::-1], atol=2 / 300)
  assert 1.0 / (fit["l2"] * len(train_y)) == pytest.approx(C, rel=1e-9)
  kernel, bias = np.asarray(fit["kernel"]), np.asarray(fit["bias"])
  assert not kernel[:, 2].any() and bias[2] == 0 and list(fit["classes"]) == [0, 1, 3, 4]
  ours, theirs = val_x @ kernel + bias, val_x @ coef.T + intercept
  centred = lambda z: z - z.mean(1, keepdims=True)  # softmax's shared constant
  present = [0, 1, 3, 4]
  scale = np.abs(centred(theirs[:, present])).max()
  assert np.abs(centred(ours[:, present]) - centred(theirs[:, present])).max() < 1e-3 * scale
  np.testing.assert_allclose(ours[:, 2], 0, atol=1e-6)  # the absent class's logit is 0, as the padded row's
  assert np.mean(ours.argmax(1) == theirs.argmax(1)) > 0.99


def test_the_raw_probe_s_standardisation_is_undone_exactly():
  """The head on raw features gives the logits the standardised fit gives on standardised features."""
  rng = np.random.default_rng(1)
  x, y = 10 + 4 * rng.normal(size=(120, 6)), rng.integers(0, 3, 120)
  fit = lp.fit_raw_probe(x, y, x, y, 3, l2_grid=[1e-2])
  mean, std = fit["mean"], fit["std"]
  assert mean == pytest.approx(x.mean()) and std == pytest.approx(x.std())
  kernel, bias = lp.fit_logistic_regression((x - mean) / std, y, 3, l2=1e-2)
  np.testing.assert_allclose(x @ fit["kernel"] + fit["bias"], ((x - mean) / std) @ np.asarray(kernel) + bias,
                             rtol=1e-4, atol=1e-4)
