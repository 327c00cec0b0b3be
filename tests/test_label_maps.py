"""ImageNet -> ImageNet-R / ImageNet-A / ObjectNet projections (WiSE-FT/FLYP rules) and project_logits."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flyp_jax.data import label_maps

# Independent reference: mlfoundations/wise-ft src/datasets/imagenet_r.py and imagenet_a.py CLASS_SUBLIST
# (ImageNet indices of the 200 classes, increasing), which FLYP copies.
WISE_FT_IMAGENET_R_SUBLIST = [
  1, 2, 4, 6, 8, 9, 11, 13, 22, 23, 26, 29, 31, 39, 47, 63, 71, 76, 79, 84, 90, 94, 96, 97, 99, 100, 105, 107,
  113, 122, 125, 130, 132, 144, 145, 147, 148, 150, 151, 155, 160, 161, 162, 163, 171, 172, 178, 187, 195, 199,
  203, 207, 208, 219, 231, 232, 234, 235, 242, 245, 247, 250, 251, 254, 259, 260, 263, 265, 267, 269, 276, 277,
  281, 288, 289, 291, 292, 293, 296, 299, 301, 308, 309, 310, 311, 314, 315, 319, 323, 327, 330, 334, 335, 337,
  338, 340, 341, 344, 347, 353, 355, 361, 362, 365, 366, 367, 368, 372, 388, 390, 393, 397, 401, 407, 413, 414,
  425, 428, 430, 435, 437, 441, 447, 448, 457, 462, 463, 469, 470, 471, 472, 476, 483, 487, 515, 546, 555, 558,
  570, 579, 583, 587, 593, 594, 596, 609, 613, 617, 621, 629, 637, 657, 658, 701, 717, 724, 763, 768, 774, 776,
  779, 780, 787, 805, 812, 815, 820, 824, 833, 847, 852, 866, 875, 883, 889, 895, 907, 928, 931, 932, 933, 934,
  936, 937, 943, 945, 947, 948, 949, 951, 953, 954, 957, 963, 965, 967, 980, 981, 983, 988,
]
WISE_FT_IMAGENET_A_SUBLIST = [
  6, 11, 13, 15, 17, 22, 23, 27, 30, 37, 39, 42, 47, 50, 57, 70, 71, 76, 79, 89, 90, 94, 96, 97, 99, 105, 107,
  108, 110, 113, 124, 125, 130, 132, 143, 144, 150, 151, 207, 234, 235, 254, 277, 283, 287, 291, 295, 298, 301,
  306, 307, 308, 309, 310, 311, 313, 314, 315, 317, 319, 323, 324, 326, 327, 330, 334, 335, 336, 347, 361, 363,
  372, 378, 386, 397, 400, 401, 402, 404, 407, 411, 416, 417, 420, 425, 428, 430, 437, 438, 445, 456, 457, 461,
  462, 470, 472, 483, 486, 488, 492, 496, 514, 516, 528, 530, 539, 542, 543, 549, 552, 557, 561, 562, 569, 572,
  573, 575, 579, 589, 606, 607, 609, 614, 626, 627, 640, 641, 642, 643, 658, 668, 677, 682, 684, 687, 701, 704,
  719, 736, 746, 749, 752, 758, 763, 765, 768, 773, 774, 776, 779, 780, 786, 792, 797, 802, 803, 804, 813, 815,
  820, 823, 831, 833, 835, 839, 845, 847, 850, 859, 862, 870, 879, 880, 888, 890, 897, 900, 907, 913, 924, 932,
  933, 934, 937, 943, 945, 947, 951, 954, 956, 957, 959, 971, 972, 980, 981, 984, 986, 987, 988,
]


# --------------------------------------------------------------------------------------- wnids & subsets
def test_imagenet_wnids_come_from_tfds():
  wnids = label_maps.imagenet_wnids()
  assert len(wnids) == 1000 and len(set(wnids)) == 1000
  assert wnids == sorted(wnids)  # ImageNet label order is sorted-wnid order
  assert wnids[:3] == ["n01440764", "n01443537", "n01484850"]  # tench, goldfish, great white shark
  assert wnids[-1] == "n15075141"                              # toilet tissue
  wnids.append("x")
  assert len(label_maps.imagenet_wnids()) == 1000  # fresh copy


@pytest.mark.parametrize("name", ["imagenet_r", "imagenet_a"])
def test_tfds_builders_label_with_imagenet_ids(name, tmp_path):
  # Why the projection needs `imagenet_label_to_subset`: TFDS's imagenet_r / imagenet_a ClassLabel is the
  # 1000-way imagenet2012 labels.txt, not a 200-class list.
  import tensorflow_datasets as tfds
  label = tfds.builder(name, data_dir=str(tmp_path)).info.features["label"]
  assert label.num_classes == 1000
  assert list(label.names) == label_maps.imagenet_wnids()


@pytest.mark.parametrize("name", ["imagenet_r", "imagenet_a"])
def test_dataset_wnids(name):
  wnids = label_maps.dataset_wnids(name)
  assert len(wnids) == 200 and len(set(wnids)) == 200
  assert wnids == sorted(wnids)  # the datasets' folder order
  assert set(wnids) <= set(label_maps.imagenet_wnids())


@pytest.mark.parametrize("name,wise_ft", [("imagenet_r", WISE_FT_IMAGENET_R_SUBLIST),
                                          ("imagenet_a", WISE_FT_IMAGENET_A_SUBLIST)])
def test_subset_indices(name, wise_ft):
  indices = label_maps.subset_indices(name)
  assert indices.dtype == np.int32 and indices.shape == (200,)
  imagenet, dataset = label_maps.imagenet_wnids(), label_maps.dataset_wnids(name)
  for i in range(200):
    assert imagenet[indices[i]] == dataset[i]
  assert indices.tolist() == wise_ft


def test_subset_indices_hand_checked():
  r, a = label_maps.subset_indices("imagenet_r"), label_maps.subset_indices("imagenet_a")
  # ImageNet-R's first class is n01443537 (goldfish) = ImageNet 1 (0 is tench, n01440764); its last is
  # n12267677 (acorn) = 988. ImageNet-A starts at n01498041 (stingray) = 6, and also ends with acorn.
  assert label_maps.dataset_wnids("imagenet_r")[0] == "n01443537" and r[0] == 1
  assert label_maps.dataset_wnids("imagenet_r")[-1] == "n12267677" and r[-1] == 988
  assert label_maps.dataset_wnids("imagenet_a")[0] == "n01498041" and a[0] == 6
  assert a[-1] == 988
  assert r[38] == 151 and label_maps.dataset_wnids("imagenet_r")[38] == "n02085620"  # Chihuahua


@pytest.mark.parametrize("name", ["imagenet_r", "imagenet_a"])
def test_imagenet_label_to_subset(name):
  table = label_maps.imagenet_label_to_subset(name)
  indices = label_maps.subset_indices(name)
  assert table.shape == (1000,) and table.dtype == np.int32
  assert (table[indices] == np.arange(200)).all()
  assert (table == -1).sum() == 800
  # A TFDS label, projected, agrees with the argmax of projected one-hot logits.
  logits = np.eye(1000, dtype=np.float32)[indices]                   # [200, 1000]: one row per class
  projected = np.asarray(label_maps.project_logits(logits, indices))
  assert (projected.argmax(-1) == table[indices]).all()


def test_unknown_dataset():
  for fn in (label_maps.dataset_wnids, label_maps.subset_indices, label_maps.imagenet_label_to_subset):
    with pytest.raises(ValueError, match="imagenet_r"):
      fn("objectnet")


# ----------------------------------------------------------------------------------------------- ObjectNet
def test_objectnet_table():
  folders = label_maps.objectnet_folders()
  indices = label_maps.objectnet_imagenet_indices()
  assert len(folders) == len(indices) == 113
  assert folders == sorted(folders) and len(set(folders)) == 113
  flat = [i for row in indices for i in row]
  # 113 ObjectNet classes cover 125 ImageNet classes, none shared between ObjectNet classes.
  assert len(flat) == len(set(flat)) == 125
  assert all(0 <= i < 1000 for i in flat) and all(1 <= len(row) <= 3 for row in indices)
  indices[0].append(5)
  assert label_maps.objectnet_imagenet_indices()[0] == [409, 530]  # fresh copy


def test_objectnet_table_hand_checked():
  table = dict(zip(label_maps.objectnet_folders(), label_maps.objectnet_imagenet_indices()))
  wnids = label_maps.imagenet_wnids()
  assert table["banana"] == [954] and wnids[954] == "n07753592"
  assert table["alarm_clock"] == [409, 530]        # analog clock, digital clock
  assert sorted(table["chair"]) == [423, 559, 765]  # barber chair, folding chair, rocking chair
  assert table["toilet_paper_roll"] == [999]
  assert table["weight_exercise"] == [543]          # dumbbell
  assert table["full_sized_towel"] == [434]         # bath towel


def _write_mappings(root: Path, folder_to_label: dict, objectnet_to_imagenet: dict,
                    pytorch_to_2012: dict, names_2012: list) -> Path:
  # The formats of objectnet-1.0/mappings/ (as copied in wise-ft src/datasets/objectnet_metadata/).
  root.mkdir(parents=True, exist_ok=True)
  (root / "folder_to_objectnet_label.json").write_text(json.dumps(folder_to_label, indent=2))
  (root / "objectnet_to_imagenet_1k.json").write_text(json.dumps(objectnet_to_imagenet, indent=2))
  (root / "pytorch_to_imagenet_2012_id.json").write_text(
    json.dumps({str(k): v for k, v in pytorch_to_2012.items()}, indent=2))
  (root / "imagenet_to_label_2012_v2").write_text("".join(n + "\n" for n in names_2012))
  return root


def test_objectnet_projection_small(tmp_path):
  # 6 ImageNet classes whose ILSVRC2012 ids are a permutation of the PyTorch (sorted-wnid) order.
  names_2012 = ["kit fox, Vulpes macrotis", "analog clock", "banana", "digital clock", "crane", "crane"]
  pytorch_to_2012 = {0: 2, 1: 0, 2: 3, 3: 1, 4: 4, 5: 5}  # pytorch 0 = banana, 2 = digital clock, ...
  mappings = _write_mappings(
    tmp_path / "mappings",
    folder_to_label={"banana": "Banana", "alarm_clock": "Alarm clock", "squeegee": "Squeegee",
                     "fox_toy": "Kit Fox"},
    objectnet_to_imagenet={"Kit Fox": "kit fox, Vulpes macrotis", "Banana": "banana",
                           "Alarm clock": "analog clock; digital clock"},
    pytorch_to_2012=pytorch_to_2012, names_2012=names_2012)
  names, indices = label_maps.objectnet_projection(mappings)
  # Sorted by folder; unmapped folders (squeegee) are not classes; labels lower-cased.
  assert names == ["alarm clock", "banana", "kit fox"]
  assert indices == [[3, 2], [0], [1]]


def test_objectnet_projection_rejects_ambiguous_and_missing(tmp_path):
  names_2012 = ["crane", "crane", "banana"]
  pytorch_to_2012 = {0: 0, 1: 1, 2: 2}
  mappings = _write_mappings(tmp_path / "a", {"crane": "Crane"}, {"Crane": "crane"}, pytorch_to_2012, names_2012)
  with pytest.raises(ValueError, match="crane"):
    label_maps.objectnet_projection(mappings)
  mappings = _write_mappings(tmp_path / "b", {"banana": "Banana"}, {"Banana": "banana"}, pytorch_to_2012,
                             names_2012)
  (mappings / "pytorch_to_imagenet_2012_id.json").unlink()
  with pytest.raises(FileNotFoundError, match="pytorch_to_imagenet_2012_id"):
    label_maps.objectnet_projection(mappings)


def test_objectnet_projection_reproduces_builtin_table(tmp_path):
  # Full-size files in the real format, with a shuffled 2012-id order, must give back the built-in table.
  rng = np.random.default_rng(0)
  order_2012 = rng.permutation(1000)                       # pytorch index p has 2012 id order_2012[p]
  names_2012 = [""] * 1000
  for p, id_2012 in enumerate(order_2012):
    names_2012[id_2012] = f"imagenet class {p}"
  folders = label_maps.objectnet_folders()
  labels = [f"Label {f}" for f in folders]
  objectnet_to_imagenet = {label: "; ".join(f"imagenet class {i}" for i in row)
                           for label, row in zip(labels, label_maps.objectnet_imagenet_indices())}
  folder_to_label = dict(zip(folders, labels)) | {"squeegee": "Squeegee", "paper": "Paper"}
  mappings = _write_mappings(tmp_path / "mappings", folder_to_label, objectnet_to_imagenet,
                             {p: int(i) for p, i in enumerate(order_2012)}, names_2012)
  names, indices = label_maps.objectnet_projection(mappings)
  assert names == [label.lower() for label in labels]
  assert indices == label_maps.objectnet_imagenet_indices()


# ---------------------------------------------------------------------------------------- project_logits
def _hand_logits() -> np.ndarray:
  logits = np.zeros((2, 1000), np.float32)
  logits[0, [0, 1, 2, 3]] = [1.0, -2.0, 5.0, 3.0]
  logits[1, [0, 1, 2, 3]] = [-1.0, 4.0, 0.5, -3.0]
  return logits


_HAND_INDICES = [[1, 3], [2], [0, 1, 2]]
_HAND_EXPECTED = {
  "max": [[3.0, 5.0, 5.0], [4.0, 0.5, 4.0]],
  "sum": [[1.0, 5.0, 4.0], [1.0, 0.5, 3.5]],
  "mean": [[0.5, 5.0, 4.0 / 3.0], [0.5, 0.5, 3.5 / 3.0]],
}


def test_objectnet_reduce_is_wise_ft_max():
  assert label_maps.OBJECTNET_REDUCE == "max"


@pytest.mark.parametrize("reduce", ["max", "sum", "mean"])
def test_project_logits_hand_example(reduce):
  logits = _hand_logits()
  expected = np.asarray(_HAND_EXPECTED[reduce], np.float32)
  eager = label_maps.project_logits(logits, _HAND_INDICES, reduce=reduce)
  np.testing.assert_allclose(np.asarray(eager), expected, rtol=1e-6)
  # Under jit: indices as a closed-over Python list, and as a traced -1-padded table.
  jitted = jax.jit(lambda x: label_maps.project_logits(x, _HAND_INDICES, reduce=reduce))
  np.testing.assert_allclose(np.asarray(jitted(jnp.asarray(logits))), expected, rtol=1e-6)
  table = jnp.asarray(label_maps.pad_indices(_HAND_INDICES))
  traced = jax.jit(lambda x, t: label_maps.project_logits(x, t, reduce=reduce))
  np.testing.assert_allclose(np.asarray(traced(jnp.asarray(logits), table)), expected, rtol=1e-6)


def test_project_logits_default_is_max_and_keeps_dtype():
  logits = jnp.asarray(_hand_logits(), jnp.bfloat16)
  out = label_maps.project_logits(logits, _HAND_INDICES)
  assert out.dtype == jnp.bfloat16 and out.shape == (2, 3)
  np.testing.assert_allclose(np.asarray(out, np.float32), _HAND_EXPECTED["max"])


def test_project_logits_max_ignores_padding_with_negative_logits():
  # All-negative logits: a padding slot read as 0 (or as logit 0) would win the max.
  logits = -np.arange(1, 1001, dtype=np.float32)[None]  # logit j = -(j + 1)
  out = np.asarray(label_maps.project_logits(logits, [[5, 7], [9]]))
  np.testing.assert_allclose(out, [[-6.0, -10.0]])


@pytest.mark.parametrize("name", ["imagenet_r", "imagenet_a"])
def test_project_logits_subset_is_column_selection(name):
  logits = np.random.default_rng(1).normal(size=(4, 1000)).astype(np.float32)
  indices = label_maps.subset_indices(name)
  expected = logits[:, indices]
  np.testing.assert_array_equal(np.asarray(label_maps.project_logits(logits, indices)), expected)
  table = jnp.asarray(label_maps.pad_indices(indices))
  assert table.shape == (200, 1)
  np.testing.assert_array_equal(np.asarray(jax.jit(label_maps.project_logits)(logits, table)), expected)


def test_project_logits_objectnet_matches_wise_ft_loop():
  logits = np.random.default_rng(2).normal(size=(5, 1000)).astype(np.float32)
  indices = label_maps.objectnet_imagenet_indices()
  # WiSE-FT ObjectNetBase.project_logits, written out.
  expected = np.zeros((5, 113))
  for k, v in enumerate(indices):
    expected[:, k] = np.max(logits[:, v], axis=1)
  got = jax.jit(lambda x: label_maps.project_logits(x, indices, reduce=label_maps.OBJECTNET_REDUCE))(logits)
  np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-6)


def test_pad_indices():
  padded = label_maps.pad_indices(_HAND_INDICES)
  assert padded.dtype == np.int32
  np.testing.assert_array_equal(padded, [[1, 3, -1], [2, -1, -1], [0, 1, 2]])
  np.testing.assert_array_equal(label_maps.pad_indices(np.array([4, 5], np.int64)), [[4], [5]])
  np.testing.assert_array_equal(label_maps.pad_indices([4, 5]), [[4], [5]])
  with pytest.raises(ValueError):
    label_maps.pad_indices([[1], []])        # a class without ImageNet indices
  with pytest.raises(ValueError):
    label_maps.pad_indices([[1000]])         # out of range
  with pytest.raises(ValueError):
    label_maps.pad_indices([])


def test_project_logits_rejects_bad_reduce():
  with pytest.raises(ValueError, match="reduce"):
    label_maps.project_logits(_hand_logits(), _HAND_INDICES, reduce="logsumexp")
