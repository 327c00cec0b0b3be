"""Input pipeline: CLIP preprocessing (eager, in tf.data, against PIL), per-process splits, batching."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image

from flyp_jax import parallel
from flyp_jax.data import pipeline


@pytest.fixture(scope="module")
def shapes_dir(data_dir):
  return data_dir  # conftest's domain_shapes/small (this file's tests name their own copies data_dir)


def pil_reference(image: np.ndarray, size: int, crop_pct: float = 1.0) -> np.ndarray:
  """CLIP's evaluation transform as its PyTorch code does it with PIL: bicubic resize of the short side,
  centre crop, scale to [0, 1], normalise. With `crop_pct`, MAE's and attention transfer's (`util/datasets.py`
  `build_transform`): the short side resized to int(size / crop_pct), then the centre crop of `size`."""
  h, w = image.shape[:2]
  short = int(size / crop_pct)
  scale = short / min(h, w)
  new_w, new_h = max(short, round(w * scale)), max(short, round(h * scale))
  resized = np.asarray(Image.fromarray(image).resize((new_w, new_h), Image.BICUBIC), np.float32)
  top, left = (new_h - size) // 2, (new_w - size) // 2
  crop = resized[top:top + size, left:left + size] / 255.0
  return (crop - np.array(pipeline.CLIP_MEAN)) / np.array(pipeline.CLIP_STD)


def smooth_image(h, w, seed=0):
  # Smooth content: resampling filters agree closely there, so a wrong crop or resize shows as a large error.
  rng = np.random.default_rng(seed)
  y, x = np.mgrid[0:h, 0:w] / max(h, w)
  channels = [np.sin(2 * np.pi * (rng.uniform(0.5, 2) * x + rng.uniform(0.5, 2) * y + rng.uniform())) for _ in range(3)]
  return ((np.stack(channels, -1) + 1) * 127.5).astype(np.uint8)


def blocky_image(h, w, seed=0):
  # Random 4x4-pixel blocks: sharp edges everywhere, where resampling filters differ. Measured against PIL's
  # bicubic: mean error 0.004 (max 0.22, at single edge pixels where PIL clips to 0..255); bilinear or
  # Lanczos resizing, or a crop one pixel off, give a mean error of 0.04-0.06.
  rng = np.random.default_rng(seed)
  blocks = rng.integers(0, 256, (h // 4 + 1, w // 4 + 1, 3))
  return blocks.repeat(4, 0).repeat(4, 1)[:h, :w].astype(np.uint8)


@pytest.mark.parametrize("shape", [(300, 200), (200, 300), (224, 224), (100, 150)])
@pytest.mark.parametrize("content", ["smooth", "blocky"])
def test_eval_preprocessing_matches_pil_reference(shape, content):
  image = (smooth_image if content == "smooth" else blocky_image)(*shape)
  ours = pipeline.preprocess_eval(tf.constant(image), 224).numpy()
  ref = pil_reference(image, 224)
  assert ours.shape == (224, 224, 3)
  error = np.abs(ours - ref)
  assert error.mean() < 0.01, error.mean()  # values span about -1.8..2.1
  assert error.max() < (0.03 if content == "smooth" else 0.25), error.max()


@pytest.mark.parametrize("shape", [(300, 200), (256, 256)])
def test_eval_crop_fraction_resizes_to_256_and_crops_224_as_mae(shape):
  image = smooth_image(*shape)
  ours = pipeline.preprocess_eval(tf.constant(image), 224, 224 / 256).numpy()
  error = np.abs(ours - pil_reference(image, 224, 224 / 256))
  assert error.mean() < 0.01 and error.max() < 0.03, (error.mean(), error.max())
  whole = np.abs(ours - pil_reference(image, 224))  # CLIP's crop: another part of the image, at another scale
  assert whole.mean() > 5 * error.mean(), (whole.mean(), error.mean())


def test_preprocessing_is_the_same_eagerly_and_inside_tf_data():
  images = [smooth_image(120, 90, s) for s in range(3)]
  eager = [pipeline.preprocess_eval(tf.constant(im), 64).numpy() for im in images]
  ds = tf.data.Dataset.from_generator(lambda: iter(images), output_signature=tf.TensorSpec((None, None, 3), tf.uint8))
  graph = [x.numpy() for x in ds.map(lambda im: pipeline.preprocess_eval(im, 64))]
  for a, b in zip(eager, graph):
    np.testing.assert_allclose(a, b, atol=1e-5)
  seed = tf.constant([1, 2], tf.int32)
  eager_train = pipeline.preprocess_train(tf.constant(images[0]), 32, seed).numpy()
  graph_train = next(iter(tf.data.Dataset.from_tensors(images[0]).map(
      lambda im: pipeline.preprocess_train(im, 32, seed)))).numpy()
  np.testing.assert_allclose(eager_train, graph_train, atol=1e-5)


def test_train_crop_keeps_most_of_the_image_and_depends_on_the_seed():
  image = smooth_image(200, 200)
  a = pipeline.preprocess_train(tf.constant(image), 64, tf.constant([0, 1])).numpy()
  b = pipeline.preprocess_train(tf.constant(image), 64, tf.constant([0, 2])).numpy()
  again = pipeline.preprocess_train(tf.constant(image), 64, tf.constant([0, 1])).numpy()
  np.testing.assert_array_equal(a, again)
  assert not np.allclose(a, b)
  # scale (0.9, 1.0) of the area: close to the whole image resized.
  whole = pipeline.normalize_image(tf.image.resize(image.astype(np.float32), (64, 64), "bicubic", antialias=True))
  assert np.abs(a - whole.numpy()).mean() < 0.3


def test_process_splits_are_disjoint_and_cover_the_split(shapes_dir):
  builder = pipeline.get_builder("domain_shapes/small", shapes_dir)
  read = lambda split: [ex["image"].tobytes() for ex in tfds.as_numpy(builder.as_dataset(split=split))]
  whole = read("test_photo")
  parts = [read(pipeline.process_split("test_photo", i, 3)) for i in range(3)]
  assert sorted(sum(parts, [])) == sorted(whole)
  assert all(len(set(parts[i]) & set(parts[j])) == 0 for i in range(3) for j in range(i + 1, 3))
  assert max(map(len, parts)) - min(map(len, parts)) <= 1


def test_eval_batches_pad_and_mask_the_last_batch(shapes_dir):
  mesh = parallel.make_mesh()
  batches = list(pipeline.eval_batches("domain_shapes/small", "test_sketch", image_size=32, global_batch_size=24,
                                       mesh=mesh, data_dir=shapes_dir))
  assert len(batches) == 5  # 100 examples in batches of 24
  assert all(b["image"].shape == (24, 32, 32, 3) and b["image"].sharding.spec[0] == "data" for b in batches)
  masks = np.concatenate([np.asarray(b["mask"]) for b in batches])
  assert masks.sum() == 100 and masks[:100].all() and not masks[100:].any()


def test_the_evaluator_reads_images_with_the_config_s_crop_fraction(shapes_dir):
  """`data.eval_crop_fraction` reaches the evaluator's batches: each image is `preprocess_eval`'s with it."""
  from flyp_jax import configs_lib, evaluate, models
  from flyp_jax.data import suites
  config = configs_lib.load("configs/ft.py:demo")
  config.unlock()
  config.data.update(data_dir=shapes_dir, eval_crop_fraction=0.5)
  sketch = suites.EvalDataset("sketch", "domain_shapes/small", "test_sketch", False, "domain_shapes", "domain_shapes")
  evaluator = evaluate.from_config(models.create_model(models.get_config("ViT-T/8")), config, parallel.make_mesh(),
                                   datasets=(sketch,))
  batch = next(iter(evaluator._batches(evaluator.datasets[0])))
  raw = next(iter(tfds.as_numpy(pipeline.get_builder("domain_shapes/small", shapes_dir).as_dataset(
      split=pipeline.process_split("test_sketch"), batch_size=8))))["image"]
  for got, image in zip(np.asarray(batch["image"]), raw):
    np.testing.assert_allclose(got, pipeline.preprocess_eval(tf.constant(image), 32, 0.5).numpy(), atol=1e-5)
  assert not np.allclose(got, pipeline.preprocess_eval(tf.constant(image), 32).numpy(), atol=1e-2)


def test_eval_pipelines_are_built_once_and_read_the_same_each_time(shapes_dir, tmp_path, monkeypatch):
  mesh = parallel.make_mesh()
  builds = []
  read_encoded = pipeline._read_encoded
  monkeypatch.setattr(pipeline, "_read_encoded", lambda *a, **k: builds.append(a[1]) or read_encoded(*a, **k))
  monkeypatch.setattr(pipeline, "_EVAL_PIPELINES", {})
  read = lambda data_dir=shapes_dir, size=32, split="test_cartoon": [
      {k: np.asarray(v) for k, v in b.items()} for b in pipeline.eval_batches(
          "domain_shapes/small", split, image_size=size, global_batch_size=40, mesh=mesh, data_dir=data_dir)]
  first, again = read(), read()
  assert builds == ["test_cartoon"]  # the second evaluation reuses the pipeline
  for a, b in zip(first, again, strict=True):
    for k in a:
      np.testing.assert_array_equal(a[k], b[k])
  # Another image size or split, or the same dataset prepared in another directory: a pipeline of its own.
  assert read(size=16)[0]["image"].shape[1] == 16
  assert read(split="test_cartoon[:50%]")[1]["mask"].sum() == 10
  other = str(tmp_path / "other_tfds")
  pipeline.get_builder("domain_shapes/small", other)
  np.testing.assert_array_equal(read(data_dir=other)[0]["label"], first[0]["label"])
  assert builds == ["test_cartoon", "test_cartoon", "test_cartoon[:50%]", "test_cartoon"]


def test_train_dataset_batches_drop_the_remainder_and_repeat(shapes_dir):
  mesh = parallel.make_mesh()
  ds = pipeline.train_dataset("domain_shapes/small", "train", image_size=32, global_batch_size=16, mesh=mesh,
                              data_dir=shapes_dir, features=("label", "caption"), flip=True)
  batches = list(tfds.as_numpy(ds.take(8)))  # 128 examples from a 100-example split: it repeats
  assert all(b["image"].shape == (16, 32, 32, 3) and b["label"].shape == (16,) for b in batches)
  assert batches[0]["image"].dtype == np.float32 and batches[0]["caption"].dtype == object
  g = parallel.global_batch({"image": batches[0]["image"]}, mesh)
  assert g["image"].shape == (16, 32, 32, 3)
  with pytest.raises(ValueError, match="not divisible by the 8 devices"):
    pipeline.train_dataset("domain_shapes/small", "train", image_size=32, global_batch_size=12, mesh=mesh,
                           data_dir=shapes_dir)


def test_train_stream_sees_every_example_once_per_epoch_and_resumes_exactly(shapes_dir):
  mesh = parallel.make_mesh()

  def batches(start_step, n):
    ds = pipeline.train_dataset("domain_shapes/small", "train", image_size=32, global_batch_size=40, mesh=mesh,
                                data_dir=shapes_dir, start_step=start_step, features=("label", "tfds_id"))
    return list(tfds.as_numpy(ds.take(n)))

  full = batches(0, 5)  # 200 examples of a 100-example split: two epochs, one batch straddling them
  ids, counts = np.unique(np.concatenate([b["tfds_id"] for b in full]), return_counts=True)
  assert len(ids) == 100 and set(counts) == {2}
  first, second = (set(np.concatenate([b["tfds_id"] for b in full])[i * 100:(i + 1) * 100]) for i in (0, 1))
  assert first == second  # each epoch is the whole split...
  assert not np.array_equal(np.concatenate([b["tfds_id"] for b in full])[:100],
                            np.concatenate([b["tfds_id"] for b in full])[100:])  # ...in a new order
  for uninterrupted, resumed in zip(full[3:], batches(3, 2)):  # resuming at step 3 gives steps 3 and 4
    for key in ("image", "label", "tfds_id"):
      np.testing.assert_array_equal(uninterrupted[key], resumed[key])


def test_train_stream_in_shards_reads_disjoint_parts_and_resumes_exactly(shapes_dir):
  """shards=2 on one process is what two processes read together: each half of a batch from its own part."""
  mesh = parallel.make_mesh()

  def batches(start_step, n, shards):
    ds = pipeline.train_dataset("domain_shapes/small", "train", image_size=32, global_batch_size=40, mesh=mesh,
                                data_dir=shapes_dir, start_step=start_step, features=("tfds_id",), shards=shards)
    return [b["tfds_id"] for b in tfds.as_numpy(ds.take(n))]

  def part_ids(part):
    builder = pipeline.get_builder("domain_shapes/small", shapes_dir)
    ds = builder.as_dataset(split=tfds.even_splits("train", n=2, drop_remainder=False)[part],
                            read_config=tfds.ReadConfig(add_tfds_id=True))
    return {ex["tfds_id"] for ex in tfds.as_numpy(ds)}

  two = batches(0, 5, shards=2)  # 50 examples per part, 20 per step: steps 0-1 and half of 2 are one epoch
  halves = [np.concatenate([b[:20] for b in two]), np.concatenate([b[20:] for b in two])]
  for part, ids in enumerate(halves):
    assert set(ids[:50]) == set(ids[50:]) == part_ids(part) and len(set(ids[:50])) == 50
  assert not part_ids(0) & part_ids(1)
  assert not np.array_equal(two[0], batches(0, 1, shards=1)[0])  # the shards decide the stream
  for uninterrupted, resumed in zip(two[3:], batches(3, 2, shards=2)):
    np.testing.assert_array_equal(uninterrupted, resumed)
  with pytest.raises(ValueError, match="data.shards=3"):
    pipeline.train_dataset("domain_shapes/small", "train", image_size=32, global_batch_size=40, mesh=mesh,
                           data_dir=shapes_dir, shards=3)


def _damage(path, how):
  """As a bad copy leaves a file: 2 KB overwritten and its last quarter cut, only cut, or gone."""
  data = bytearray(path.read_bytes())
  if how == "missing":
    path.unlink()
    return
  if how == "corrupted":
    data[len(data) // 3:len(data) // 3 + 2048] = bytes(2048)
  path.write_bytes(bytes(data[:len(data) * 3 // 4]))


@pytest.mark.parametrize("how", ["corrupted", "truncated", "missing"])
def test_a_damaged_dataset_file_is_named_with_how_to_make_it_whole(shapes_dir, tmp_path, how):
  """Evaluation and training over a split with a damaged file stop with one paragraph naming the dataset, the
  split and the file, and how to copy or prepare it again; evaluation yields no metric over the readable part
  (the error comes instead of the generator's end)."""
  import pathlib
  import shutil
  data_dir = tmp_path / "tfds"
  shutil.copytree(shapes_dir, data_dir)
  builder = pipeline.get_builder("domain_shapes/small", str(data_dir))
  damaged = {}
  for split in ("test_photo", "train"):
    path = pathlib.Path(builder.info.splits[split].filepaths[0])
    _damage(path, how)
    damaged[split] = str(path)
  mesh = parallel.make_mesh()
  with pytest.raises(pipeline.DamagedDatasetError) as error:
    for _ in pipeline.eval_batches("domain_shapes/small", "test_photo", image_size=32, global_batch_size=24,
                                   mesh=mesh, data_dir=str(data_dir)):
      pass
  message = str(error.value)
  assert f"file {damaged['test_photo']} is damaged" in message and "'test_photo'" in message, message
  assert ("missing" in message) == (how == "missing") and "\n" not in message
  assert f"Copy the dataset folder {builder.data_dir} again" in message and "generated here" in message
  assert "{{" not in message and "[Op:" not in message  # TensorFlow's words without its op decoration
  batches = pipeline.train_batches("domain_shapes/small", "train", image_size=32, global_batch_size=16, mesh=mesh,
                                   data_dir=str(data_dir))
  with pytest.raises(pipeline.DamagedDatasetError, match=f"'train': file {damaged['train']} is damaged"):
    for _ in range(20):  # more than an epoch of the 100 examples
      next(batches)
