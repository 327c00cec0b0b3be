"""Projections from 1000-way ImageNet logits onto the classes of ImageNet-derived shift datasets.

FLYP evaluates one ImageNet-trained classifier on datasets that cover only part of ImageNet's label
space, with the same rules as WiSE-FT (mlfoundations/wise-ft `src/datasets/`, which FLYP copies):

* ImageNet-R / ImageNet-A (200 classes each): keep the logit columns of the covered classes,
  `logits[:, subset_indices(name)]`, in increasing ImageNet index order. Both datasets' classes are
  their wnid folder names, and ImageNet's label order is the sorted wnid order, so "sorted wnids" and
  "increasing ImageNet index" are the same order (WiSE-FT's `logits[:, CLASS_SUBLIST_MASK]`).
* ObjectNet (113 classes that overlap ImageNet): several ImageNet classes can map onto one ObjectNet
  class (e.g. Chair <- barber chair, folding chair, rocking chair). WiSE-FT's
  `ObjectNetBase.project_logits` reduces them with a max over the mapped logits; see
  `OBJECTNET_REDUCE` and `project_logits`.

Label conventions, which matter because the evaluator reads labels from TFDS:

* TFDS's `imagenet_r` and `imagenet_a` builders do NOT ship their own 200-class label files: their
  `label` feature is `ClassLabel(names_file=imagenet2012/labels.txt)`, i.e. 1000-way ImageNet label
  ids. So the wnid lists of the two datasets live here as data (`IMAGENET_R_WNIDS`,
  `IMAGENET_A_WNIDS`, from the datasets' authors), and `imagenet_label_to_subset(name)` turns a TFDS
  label (0..999) into the 0..199 position that matches `logits[:, subset_indices(name)]`.
* ObjectNet is a user-provided folder (not in TFDS). Its class index is the position of the image's
  folder name in the sorted list of the 113 mapped folders, as in WiSE-FT's `ObjectNet` dataset.

Everything returned is a fresh copy; callers may mutate it.
"""

from __future__ import annotations

import functools
import importlib.util
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Optional, Union

import jax
import jax.numpy as jnp
import numpy as np

from flyp_jax import errors

# Aggregation WiSE-FT (and thus FLYP) uses when several ImageNet classes map to one ObjectNet class:
# `logits_projected[:, k] = np.max(logits[:, v], axis=1)` in `ObjectNetBase.project_logits`.
OBJECTNET_REDUCE = "max"

# The four mapping files of the ObjectNet download (`objectnet-1.0/mappings/`) that WiSE-FT's
# `get_metadata` reads; `objectnet_projection` needs all four (see its docstring for why).
OBJECTNET_MAPPING_FILES = (
  "folder_to_objectnet_label.json",
  "objectnet_to_imagenet_1k.json",
  "pytorch_to_imagenet_2012_id.json",
  "imagenet_to_label_2012_v2",
)

NUM_IMAGENET_CLASSES = 1000

# Path of the imagenet2012 label file inside the tensorflow_datasets package; both the imagenet2012
# builder and the imagenet_r / imagenet_a builders use it as their ClassLabel names file.
_TFDS_IMAGENET_LABELS = ("datasets", "imagenet2012", "labels.txt")

# The 200 ImageNet-R classes as wnids, sorted (= the dataset's folder order and its class order in
# WiSE-FT/FLYP). From hendrycks/imagenet-r `eval.py` (`imagenet_r_wnids`); they match WiSE-FT's
# `src/datasets/imagenet_r.py` CLASS_SUBLIST through TFDS's imagenet2012 labels.txt.
IMAGENET_R_WNIDS: tuple[str, ...] = (
  "n01443537", "n01484850", "n01494475", "n01498041", "n01514859", "n01518878", "n01531178", "n01534433",
  "n01614925", "n01616318", "n01630670", "n01632777", "n01644373", "n01677366", "n01694178", "n01748264",
  "n01770393", "n01774750", "n01784675", "n01806143", "n01820546", "n01833805", "n01843383", "n01847000",
  "n01855672", "n01860187", "n01882714", "n01910747", "n01944390", "n01983481", "n01986214", "n02007558",
  "n02009912", "n02051845", "n02056570", "n02066245", "n02071294", "n02077923", "n02085620", "n02086240",
  "n02088094", "n02088238", "n02088364", "n02088466", "n02091032", "n02091134", "n02092339", "n02094433",
  "n02096585", "n02097298", "n02098286", "n02099601", "n02099712", "n02102318", "n02106030", "n02106166",
  "n02106550", "n02106662", "n02108089", "n02108915", "n02109525", "n02110185", "n02110341", "n02110958",
  "n02112018", "n02112137", "n02113023", "n02113624", "n02113799", "n02114367", "n02117135", "n02119022",
  "n02123045", "n02128385", "n02128757", "n02129165", "n02129604", "n02130308", "n02134084", "n02138441",
  "n02165456", "n02190166", "n02206856", "n02219486", "n02226429", "n02233338", "n02236044", "n02268443",
  "n02279972", "n02317335", "n02325366", "n02346627", "n02356798", "n02363005", "n02364673", "n02391049",
  "n02395406", "n02398521", "n02410509", "n02423022", "n02437616", "n02445715", "n02447366", "n02480495",
  "n02480855", "n02481823", "n02483362", "n02486410", "n02510455", "n02526121", "n02607072", "n02655020",
  "n02672831", "n02701002", "n02749479", "n02769748", "n02793495", "n02797295", "n02802426", "n02808440",
  "n02814860", "n02823750", "n02841315", "n02843684", "n02883205", "n02906734", "n02909870", "n02939185",
  "n02948072", "n02950826", "n02951358", "n02966193", "n02980441", "n02992529", "n03124170", "n03272010",
  "n03345487", "n03372029", "n03424325", "n03452741", "n03467068", "n03481172", "n03494278", "n03495258",
  "n03498962", "n03594945", "n03602883", "n03630383", "n03649909", "n03676483", "n03710193", "n03773504",
  "n03775071", "n03888257", "n03930630", "n03947888", "n04086273", "n04118538", "n04133789", "n04141076",
  "n04146614", "n04147183", "n04192698", "n04254680", "n04266014", "n04275548", "n04310018", "n04325704",
  "n04347754", "n04389033", "n04409515", "n04465501", "n04487394", "n04522168", "n04536866", "n04552348",
  "n04591713", "n07614500", "n07693725", "n07695742", "n07697313", "n07697537", "n07714571", "n07714990",
  "n07718472", "n07720875", "n07734744", "n07742313", "n07745940", "n07749582", "n07753275", "n07753592",
  "n07768694", "n07873807", "n07880968", "n07920052", "n09472597", "n09835506", "n10565667", "n12267677",
)

# The 200 ImageNet-A classes as wnids, sorted: the wnid folders of hendrycks' imagenet-a.tar. Through
# TFDS's imagenet2012 labels.txt they give exactly WiSE-FT's `src/datasets/imagenet_a.py` CLASS_SUBLIST
# (= the keys with a value != -1 of `thousand_k_to_200` in hendrycks/natural-adv-examples `eval.py`).
IMAGENET_A_WNIDS: tuple[str, ...] = (
  "n01498041", "n01531178", "n01534433", "n01558993", "n01580077", "n01614925", "n01616318", "n01631663",
  "n01641577", "n01669191", "n01677366", "n01687978", "n01694178", "n01698640", "n01735189", "n01770081",
  "n01770393", "n01774750", "n01784675", "n01819313", "n01820546", "n01833805", "n01843383", "n01847000",
  "n01855672", "n01882714", "n01910747", "n01914609", "n01924916", "n01944390", "n01985128", "n01986214",
  "n02007558", "n02009912", "n02037110", "n02051845", "n02077923", "n02085620", "n02099601", "n02106550",
  "n02106662", "n02110958", "n02119022", "n02123394", "n02127052", "n02129165", "n02133161", "n02137549",
  "n02165456", "n02174001", "n02177972", "n02190166", "n02206856", "n02219486", "n02226429", "n02231487",
  "n02233338", "n02236044", "n02259212", "n02268443", "n02279972", "n02280649", "n02281787", "n02317335",
  "n02325366", "n02346627", "n02356798", "n02361337", "n02410509", "n02445715", "n02454379", "n02486410",
  "n02492035", "n02504458", "n02655020", "n02669723", "n02672831", "n02676566", "n02690373", "n02701002",
  "n02730930", "n02777292", "n02782093", "n02787622", "n02793495", "n02797295", "n02802426", "n02814860",
  "n02815834", "n02837789", "n02879718", "n02883205", "n02895154", "n02906734", "n02948072", "n02951358",
  "n02980441", "n02992211", "n02999410", "n03014705", "n03026506", "n03124043", "n03125729", "n03187595",
  "n03196217", "n03223299", "n03250847", "n03255030", "n03291819", "n03325584", "n03355925", "n03384352",
  "n03388043", "n03417042", "n03443371", "n03444034", "n03445924", "n03452741", "n03483316", "n03584829",
  "n03590841", "n03594945", "n03617480", "n03666591", "n03670208", "n03717622", "n03720891", "n03721384",
  "n03724870", "n03775071", "n03788195", "n03804744", "n03837869", "n03840681", "n03854065", "n03888257",
  "n03891332", "n03935335", "n03982430", "n04019541", "n04033901", "n04039381", "n04067472", "n04086273",
  "n04099969", "n04118538", "n04131690", "n04133789", "n04141076", "n04146614", "n04147183", "n04179913",
  "n04208210", "n04235860", "n04252077", "n04252225", "n04254120", "n04270147", "n04275548", "n04310018",
  "n04317175", "n04344873", "n04347754", "n04355338", "n04366367", "n04376876", "n04389033", "n04399382",
  "n04442312", "n04456115", "n04482393", "n04507155", "n04509417", "n04532670", "n04540053", "n04554684",
  "n04562935", "n04591713", "n04606251", "n07583066", "n07695742", "n07697313", "n07697537", "n07714990",
  "n07718472", "n07720875", "n07734744", "n07749582", "n07753592", "n07760859", "n07768694", "n07831146",
  "n09229709", "n09246464", "n09472597", "n09835506", "n11879895", "n12057211", "n12144580", "n12267677",
)

_DATASET_WNIDS: dict[str, tuple[str, ...]] = {
  "imagenet_r": IMAGENET_R_WNIDS,
  "imagenet_a": IMAGENET_A_WNIDS,
}

# ObjectNet classes that overlap ImageNet-1k: (ObjectNet folder name, ObjectNet label, ImageNet indices),
# sorted by folder name, which is the class order of WiSE-FT's ObjectNet dataset (`label_map` over
# `sorted(folders_to_ids)`). Built with WiSE-FT's `get_metadata` rule from the ObjectNet mapping files
# as copied in mlfoundations/wise-ft `src/datasets/objectnet_metadata/`: each ImageNet name in
# `objectnet_to_imagenet_1k.json` (';'-separated) resolved to its PyTorch (= sorted-wnid = TFDS) index.
# The comment after each row gives open_clip's curated names of those ImageNet classes.
OBJECTNET_CLASSES: tuple[tuple[str, str, tuple[int, ...]], ...] = (
  ("alarm_clock", "Alarm clock", (409, 530)),  # analog clock; digital clock
  ("backpack", "Backpack", (414,)),  # backpack
  ("banana", "Banana", (954,)),  # banana
  ("band_aid", "Band Aid", (419,)),  # Band-Aid
  ("basket", "Basket", (790,)),  # shopping basket
  ("beer_bottle", "Beer bottle", (440,)),  # beer bottle
  ("bench", "Bench", (703,)),  # park bench
  ("bicycle", "Bicycle", (671, 444)),  # mountain bike; tandem bicycle
  ("binder_closed", "Binder (closed)", (446,)),  # ring binder
  ("bottle_cap", "Bottle cap", (455,)),  # bottle cap
  ("bread_loaf", "Bread loaf", (930,)),  # baguette
  ("broom", "Broom", (462,)),  # broom
  ("bucket", "Bucket", (463,)),  # bucket
  ("butchers_knife", "Butcher's knife", (499,)),  # cleaver
  ("can_opener", "Can opener", (473,)),  # can opener
  ("candle", "Candle", (470,)),  # candle
  ("cellphone", "Cellphone", (487,)),  # mobile phone
  ("chair", "Chair", (423, 559, 765)),  # barber chair; folding chair; rocking chair
  ("clothes_hamper", "Clothes hamper", (588,)),  # hamper
  ("coffee_french_press", "Coffee/French press", (550,)),  # espresso machine
  ("combination_lock", "Combination lock", (507,)),  # combination lock
  ("computer_mouse", "Computer mouse", (673,)),  # computer mouse
  ("desk_lamp", "Desk lamp", (846,)),  # table lamp
  ("doormat", "Doormat", (539,)),  # doormat
  ("dress", "Dress", (578,)),  # gown
  ("dress_shoe_men", "Dress shoe (men)", (630,)),  # slip-on shoe
  ("drill", "Drill", (740,)),  # power drill
  ("drinking_cup", "Drinking Cup", (968,)),  # tea cup
  ("drying_rack_for_dishes", "Drying rack for plates", (729,)),  # plate rack
  ("envelope", "Envelope", (549,)),  # envelope
  ("fan", "Fan", (545,)),  # electric fan
  ("frying_pan", "Frying pan", (567,)),  # frying pan
  ("full_sized_towel", "Bath towel", (434,)),  # bath towel
  ("hair_dryer", "Hair dryer", (589,)),  # hair dryer
  ("hammer", "Hammer", (587,)),  # hammer
  ("hand_towel_or_rag", "Dishrag or hand towel", (533,)),  # dishcloth
  ("helmet", "Helmet", (560, 518)),  # football helmet; crash helmet
  ("iron_for_clothes", "Iron (for clothes)", (606,)),  # clothes iron
  ("jeans", "Jeans", (608,)),  # jeans
  ("keyboard", "Keyboard", (508,)),  # computer keyboard
  ("ladle", "Ladle", (618,)),  # ladle
  ("lampshade", "Lampshade", (619,)),  # lampshade
  ("laptop_open", "Laptop (open)", (620,)),  # laptop computer
  ("lemon", "Lemon", (951,)),  # lemon
  ("letter_opener", "Letter opener", (623,)),  # letter opener
  ("lighter", "Lighter", (626,)),  # lighter
  ("lipstick", "Lipstick", (629,)),  # lipstick
  ("match", "Match", (644,)),  # matchstick
  ("measuring_cup", "Measuring cup", (647,)),  # measuring cup
  ("microwave", "Microwave", (651,)),  # microwave oven
  ("mixing_salad_bowl", "Mixing / Salad Bowl", (659,)),  # mixing bowl
  ("monitor", "Monitor", (664,)),  # monitor
  ("mug", "Mug", (504,)),  # coffee mug
  ("nail_fastener", "Nail (fastener)", (677,)),  # metal nail
  ("necklace", "Necklace", (679,)),  # necklace
  ("orange", "Orange", (950,)),  # orange
  ("padlock", "Padlock", (695,)),  # padlock
  ("paintbrush", "Paintbrush", (696,)),  # paintbrush
  ("paper_towel", "Paper towel", (700,)),  # paper towel
  ("pen", "Pen", (418, 749, 563)),  # ballpoint pen; quill; fountain pen
  ("pill_bottle", "Pill bottle", (720,)),  # pill bottle
  ("pillow", "Pillow", (721,)),  # pillow
  ("pitcher", "Pitcher", (725,)),  # drink pitcher
  ("plastic_bag", "Plastic bag", (728,)),  # plastic bag
  ("plate", "Plate", (923,)),  # plate
  ("plunger", "Plunger", (731,)),  # plunger
  ("pop_can", "Pop can", (737,)),  # soda bottle
  ("portable_heater", "Portable heater", (811,)),  # space heater
  ("printer", "Printer", (742,)),  # printer
  ("remote_control", "Remote control", (761,)),  # remote control
  ("ruler", "Ruler", (769,)),  # ruler measuring stick
  ("running_shoe", "Running shoe", (770,)),  # sneaker
  ("safety_pin", "Safety pin", (772,)),  # safety pin
  ("salt_shaker", "Salt shaker", (773,)),  # salt shaker
  ("sandal", "Sandal", (774,)),  # sandal
  ("screw", "Screw", (783,)),  # screw
  ("shovel", "Shovel", (792,)),  # shovel
  ("skirt", "Skirt", (601, 655, 689)),  # hoop skirt; miniskirt; overskirt
  ("sleeping_bag", "Sleeping bag", (797,)),  # sleeping bag
  ("soap_dispenser", "Soap dispenser", (804,)),  # soap dispenser
  ("sock", "Sock", (806,)),  # sock
  ("soup_bowl", "Soup Bowl", (809,)),  # soup bowl
  ("spatula", "Spatula", (813,)),  # spatula
  ("speaker", "Speaker", (632,)),  # music speaker
  ("still_camera", "Still Camera", (732, 759)),  # Polaroid camera; reflex camera
  ("strainer", "Strainer", (828,)),  # strainer
  ("stuffed_animal", "Stuffed animal", (850,)),  # teddy bear
  ("suit_jacket", "Suit jacket", (834,)),  # suit
  ("sunglasses", "Sunglasses", (837,)),  # sunglasses
  ("sweater", "Sweater", (841,)),  # sweatshirt
  ("swimming_trunks", "Swimming trunks", (842,)),  # swim trunks / shorts
  ("t-shirt", "T-shirt", (610,)),  # T-shirt
  ("teapot", "Teapot", (849,)),  # teapot
  ("tennis_racket", "Tennis racket", (752,)),  # racket
  ("tie", "Tie", (457, 906)),  # bow tie; Windsor tie
  ("toaster", "Toaster", (859,)),  # toaster
  ("toilet_paper_roll", "Toilet paper roll", (999,)),  # toilet paper
  ("trash_bin", "Trash bin", (412,)),  # trash can
  ("tray", "Tray", (868,)),  # tray
  ("tv", "TV", (851,)),  # television
  ("umbrella", "Umbrella", (879,)),  # umbrella
  ("vacuum_cleaner", "Vacuum cleaner", (882,)),  # vacuum cleaner
  ("vase", "Vase", (883,)),  # vase
  ("wallet", "Wallet", (893,)),  # wallet
  ("watch", "Watch", (531,)),  # digital watch
  ("water_bottle", "Water bottle", (898,)),  # water bottle
  ("weight_exercise", "Weight (exercise)", (543,)),  # dumbbell
  ("weight_scale", "Weight scale", (778,)),  # weighing scale
  ("wheel", "Wheel", (479, 694)),  # car wheel; paddle wheel
  ("whistle", "Whistle", (902,)),  # whistle
  ("wine_bottle", "Wine bottle", (907,)),  # wine bottle
  ("winter_glove", "Winter glove", (658,)),  # mitten
  ("wok", "Wok", (909,)),  # wok
)


def _tfds_package_dir() -> Path:
  """Directory of the installed tensorflow_datasets package, found without importing it (slow, pulls TF)."""
  spec = importlib.util.find_spec("tensorflow_datasets")
  if spec is None or not spec.submodule_search_locations:
    raise ModuleNotFoundError("tensorflow_datasets is not installed; it ships the ImageNet label file")
  return Path(list(spec.submodule_search_locations)[0])


@functools.lru_cache(maxsize=None)
def _imagenet_wnids() -> tuple[str, ...]:
  path = _tfds_package_dir().joinpath(*_TFDS_IMAGENET_LABELS)
  if not path.is_file():
    raise errors.NotFound(f"tensorflow_datasets' ImageNet label file is missing: {path}")
  wnids = tuple(line.strip() for line in path.read_text().splitlines() if line.strip())
  if len(wnids) != NUM_IMAGENET_CLASSES:
    raise errors.BadValue(f"{path} lists {len(wnids)} wnids, expected {NUM_IMAGENET_CLASSES}")
  return wnids


def imagenet_wnids() -> list[str]:
  """The 1000 ImageNet-2012 wnids in label order (label i is `imagenet_wnids()[i]`).

  Read from `tensorflow_datasets/datasets/imagenet2012/labels.txt`, the ClassLabel names file of TFDS's
  imagenet2012, imagenet_r and imagenet_a builders, so indices here are TFDS's label ids. The order is
  the sorted wnid order (= torchvision ImageFolder / PyTorch model output order).
  """
  return list(_imagenet_wnids())


def _check_dataset(name: str) -> tuple[str, ...]:
  try:
    return _DATASET_WNIDS[name]
  except KeyError:
    raise errors.BadValue(f"unknown dataset {name!r}; known: {sorted(_DATASET_WNIDS)}") from None


def dataset_wnids(name: str) -> list[str]:
  """The 200 wnids of 'imagenet_r' or 'imagenet_a', in the dataset's class order (sorted wnids).

  TFDS ships no per-dataset label file for these (their labels are 1000-way ImageNet ids), so the lists
  are the constants above; class k of the dataset is `dataset_wnids(name)[k]`.
  """
  return list(_check_dataset(name))


@functools.lru_cache(maxsize=None)
def _subset_indices(name: str) -> tuple[int, ...]:
  position = {wnid: i for i, wnid in enumerate(_imagenet_wnids())}
  wnids = _check_dataset(name)
  missing = [w for w in wnids if w not in position]
  if missing:
    raise errors.BadValue(f"{name} wnids not among ImageNet's: {missing}")
  indices = tuple(position[w] for w in wnids)
  # WiSE-FT selects columns with a boolean mask, i.e. in increasing index order; sorted wnids give
  # exactly that order, which this guards.
  if list(indices) != sorted(indices):
    raise errors.BadValue(f"{name} wnids are not in ImageNet label order")
  return indices


def subset_indices(name: str) -> np.ndarray:
  """int32 [n_classes]: ImageNet index of each class of 'imagenet_r' / 'imagenet_a', in class order.

  Use as `logits[:, subset_indices(name)]` to go from [N, 1000] to [N, 200] logits.
  """
  return np.asarray(_subset_indices(name), dtype=np.int32)


def imagenet_label_to_subset(name: str) -> np.ndarray:
  """int32 [1000]: maps a 1000-way ImageNet label to its class index in 'imagenet_r' / 'imagenet_a'.

  Entries of ImageNet classes outside the dataset are -1. TFDS's imagenet_r / imagenet_a labels are
  ImageNet ids, so `imagenet_label_to_subset(name)[tfds_label]` is the target that matches
  `argmax(logits[:, subset_indices(name)])`. Works as a gather table under jit (`table[labels]`).
  """
  table = np.full((NUM_IMAGENET_CLASSES,), -1, dtype=np.int32)
  indices = subset_indices(name)
  table[indices] = np.arange(len(indices), dtype=np.int32)
  return table


def objectnet_folders() -> list[str]:
  """The 113 ObjectNet image-folder names that overlap ImageNet, in class order (sorted).

  An ObjectNet image in `images/<folder>/` has class `objectnet_folders().index(folder)`; images in other
  folders are not part of the ImageNet-overlap evaluation (WiSE-FT drops them).
  """
  return [folder for folder, _, _ in OBJECTNET_CLASSES]


def objectnet_classnames() -> list[str]:
  """The 113 ObjectNet class names in class order, lower-cased as WiSE-FT/FLYP use them for zero-shot."""
  return [label.lower() for _, label, _ in OBJECTNET_CLASSES]


def objectnet_imagenet_indices() -> list[list[int]]:
  """For each of the 113 ObjectNet classes (class order), the ImageNet indices mapped to it.

  Ragged (1 to 3 indices per class); pass to `project_logits(logits, indices, reduce=OBJECTNET_REDUCE)`.
  """
  return [list(indices) for _, _, indices in OBJECTNET_CLASSES]


def objectnet_projection(mappings_dir: Union[str, Path]) -> tuple[list[str], list[list[int]]]:
  """Builds the ObjectNet -> ImageNet projection from the mapping files of a user's ObjectNet download.

  Follows WiSE-FT's `get_metadata` (src/datasets/objectnet.py). It needs all four files in
  `OBJECTNET_MAPPING_FILES`, not only the two JSON maps, because
  `objectnet_to_imagenet_1k.json` ({ObjectNet label: "imagenet name; imagenet name"}) names ImageNet
  classes by their text, and turning text into an index takes `imagenet_to_label_2012_v2` (line i is the
  name of ILSVRC2012 id i) and `pytorch_to_imagenet_2012_id.json` ({"pytorch index": 2012 id}), while
  the class order comes from the folder names in `folder_to_objectnet_label.json` ({folder: label}).

  Args:
    mappings_dir: the `mappings/` folder of the ObjectNet download (e.g. `objectnet-1.0/mappings`).

  Returns:
    (classnames, imagenet_indices): both of length n_classes (113 for the real files), sorted by folder
    name. classnames are the ObjectNet labels lower-cased; imagenet_indices[k] lists the PyTorch/TFDS
    ImageNet indices of class k in the order the mapping file names them. Reduce them with
    `project_logits(..., reduce=OBJECTNET_REDUCE)`.

  Raises:
    FileNotFoundError: a mapping file is missing.
    ValueError: a referenced ImageNet name or ObjectNet label cannot be resolved unambiguously.
  """
  root = Path(mappings_dir)
  for filename in OBJECTNET_MAPPING_FILES:
    if not (root / filename).is_file():
      raise errors.NotFound(f"ObjectNet mapping file {root / filename} is missing")
  folder_to_label: dict[str, str] = json.loads((root / "folder_to_objectnet_label.json").read_text())
  objectnet_to_imagenet: dict[str, str] = json.loads((root / "objectnet_to_imagenet_1k.json").read_text())
  pytorch_to_2012: dict[str, int] = json.loads((root / "pytorch_to_imagenet_2012_id.json").read_text())
  names_2012 = [line.strip() for line in
                (root / "imagenet_to_label_2012_v2").read_text().splitlines()]

  id_2012_to_pytorch = {int(v): int(k) for k, v in pytorch_to_2012.items()}
  # A few ImageNet names occur twice (e.g. 'crane' the bird and the machine). WiSE-FT's dict keeps the
  # last one silently; none of ObjectNet's references are ambiguous, so refusing them is safer.
  name_to_pytorch: dict[str, list[int]] = {}
  for id_2012, name in enumerate(names_2012):
    if name and id_2012 in id_2012_to_pytorch:
      name_to_pytorch.setdefault(name, []).append(id_2012_to_pytorch[id_2012])
  label_to_folder: dict[str, str] = {}
  for folder, label in folder_to_label.items():
    if label in label_to_folder:
      raise errors.BadValue(f"ObjectNet label {label!r} has two folders")
    label_to_folder[label] = folder

  rows = []
  for label, joined_names in objectnet_to_imagenet.items():
    if label not in label_to_folder:
      raise errors.BadValue(f"ObjectNet label {label!r} has no folder in folder_to_objectnet_label.json")
    indices = []
    for imagenet_name in joined_names.split("; "):
      candidates = name_to_pytorch.get(imagenet_name.strip(), [])
      if len(candidates) != 1:
        raise errors.BadValue(f"ImageNet name {imagenet_name!r} (for {label!r}) matches {len(candidates)} "
                         f"classes in imagenet_to_label_2012_v2")
      indices.append(candidates[0])
    rows.append((label_to_folder[label], label.lower(), indices))
  rows.sort(key=lambda row: row[0])
  return [name for _, name, _ in rows], [indices for _, _, indices in rows]


IndicesLike = Union[Sequence[Sequence[int]], Sequence[int], np.ndarray, jax.Array]


def pad_indices(indices: IndicesLike) -> np.ndarray:
  """Per-class ImageNet index lists -> int32 [n_classes, max_width], padded with -1.

  Accepts ragged lists (ObjectNet), a flat sequence / 1-D array with one index per class (e.g.
  `subset_indices`, which becomes [n_classes, 1]) or a 2-D array that is already -1-padded. The fixed
  shape is what lets `project_logits` run under jit; build it once outside the jitted function when the
  table is reused.

  Raises:
    ValueError: no classes, an index outside [0, 1000), or a class without any index.
  """
  if isinstance(indices, (np.ndarray, jax.Array)) or all(
      isinstance(i, (int, np.integer)) for i in indices):
    array = np.asarray(indices)
    if array.ndim == 1:
      array = array[:, None]
    if array.ndim != 2:
      raise errors.BadValue(f"indices must be 1-D or 2-D, got shape {array.shape}")
    padded = array.astype(np.int32)
  else:
    rows = [[int(i) for i in row] for row in indices]
    width = max(len(row) for row in rows)
    padded = np.full((len(rows), max(width, 1)), -1, dtype=np.int32)
    for k, row in enumerate(rows):
      padded[k, :len(row)] = row
  if padded.size == 0:
    raise errors.BadValue("indices name no classes")
  if (padded >= NUM_IMAGENET_CLASSES).any() or (padded < -1).any():
    raise errors.BadValue(f"indices must lie in [0, {NUM_IMAGENET_CLASSES}) (or be -1 padding)")
  if not (padded >= 0).any(axis=1).all():
    raise errors.BadValue("every class needs at least one ImageNet index")
  return padded


_REDUCTIONS = ("max", "sum", "mean")


def project_logits(logits: Union[np.ndarray, jax.Array], indices: IndicesLike,
                   reduce: str = OBJECTNET_REDUCE) -> jax.Array:
  """Projects [N, 1000] ImageNet logits onto a dataset's classes: [N, n_classes].

  out[:, k] = reduce(logits[:, j] for j in indices[k]). With one index per class (ImageNet-R/A) every
  reduction is plain column selection. For ObjectNet WiSE-FT uses the max (`OBJECTNET_REDUCE`); 'sum'
  and 'mean' are offered for experiments.

  Jit-friendly: ragged lists are padded to a fixed width with -1 (see `pad_indices`) and the padding is
  masked out, so the shapes depend only on the table's shape. Passing Python lists or NumPy arrays
  inside a jitted function is fine (they are constants); a traced 2-D int array must already be padded
  with -1.

  Args:
    logits: float [N, 1000] (NumPy or JAX).
    indices: per-class ImageNet indices: ragged lists, a 1-D array [n_classes], or a -1-padded 2-D
      array [n_classes, width].
    reduce: 'max' | 'sum' | 'mean' over the ImageNet logits mapped to one class.

  Returns:
    jnp array [N, n_classes] with the dtype of `logits`.
  """
  if reduce not in _REDUCTIONS:
    raise errors.BadValue(f"reduce must be one of {_REDUCTIONS}, got {reduce!r}")
  if isinstance(indices, jax.Array):
    # A JAX (possibly traced) table: no host-side checks possible; expect -1 padding.
    table = indices if indices.ndim == 2 else indices[:, None]
    table = table.astype(jnp.int32)
  else:
    table = jnp.asarray(pad_indices(indices))
  logits = jnp.asarray(logits)
  if logits.ndim != 2:
    raise errors.BadValue(f"logits must be [N, classes], got shape {logits.shape}")
  valid = table >= 0                                   # [C, W]
  gathered = logits[:, jnp.where(valid, table, 0)]     # [N, C, W]
  if reduce == "max":
    return jnp.max(jnp.where(valid, gathered, -jnp.inf), axis=-1).astype(logits.dtype)
  total = jnp.sum(jnp.where(valid, gathered, 0), axis=-1)
  if reduce == "sum":
    return total.astype(logits.dtype)
  return (total / jnp.sum(valid, axis=-1)).astype(logits.dtype)


# -------------------------------------------------------------- TFDS labels that are not a dataset's classes
# TFDS caltech101 numbers its 102 folders in sorted lower-case order, 'background_google' among them (label 4);
# FLYP's Caltech101 (locuslab/FLYP src/datasets/caltech101.py) has the 101 object classes only.
CALTECH101_BACKGROUND_LABEL = 4
CALTECH101_TFDS_LABELS = 102


def _caltech101_table() -> np.ndarray:
  labels = np.arange(CALTECH101_TFDS_LABELS)
  return np.where(labels == CALTECH101_BACKGROUND_LABEL, -1,
                  labels - (labels > CALTECH101_BACKGROUND_LABEL)).astype(np.int32)


_CLASS_TABLES = {"caltech101": _caltech101_table}


def class_table(name: str) -> Optional[np.ndarray]:
  """TFDS label -> class index [n_tfds_labels] int32 for dataset `name`, -1 for a label that is no class (its
  examples are left out of training and evaluation); None for "" (labels are the classes).

  Used where a dataset's TFDS labels are not the classes its class-name list numbers (Caltech101's background).
  """
  if not name:
    return None
  if name not in _CLASS_TABLES:
    raise errors.BadValue(f"unknown label map {name!r}; known: {sorted(_CLASS_TABLES)} (or '' for none)")
  return _CLASS_TABLES[name]()
