"""Class names for zero-shot heads, one per label id, in each dataset's label order.

`get(name)` returns a fresh list whose entry i names label i of the dataset (after the projection of
`flyp_jax.data.label_maps` for ImageNet-R/A and ObjectNet).

Sources:
  imagenet: OpenAI's curated 1000 names (openai/CLIP notebooks/Prompt_Engineering_for_ImageNet.ipynb),
    exactly open_clip `zero_shot_metadata.IMAGENET_CLASSNAMES` (= WiSE-FT/FLYP `get_classnames('openai')`),
    in ImageNet label order.
  imagenet_r, imagenet_a: the imagenet names at `label_maps.subset_indices(name)` (WiSE-FT's
    `ImageNetSubsample`: `[classnames[i] for i in class_sublist]`).
  objectnet: the 113 ObjectNet labels that overlap ImageNet, lower-cased, in folder-name order
    (WiSE-FT `ObjectNetBase`); they come from `label_maps.objectnet_classnames()`.
  iwildcam: the 182 WILDS iWildCam classes, label y = 0..181, `english` column lower-cased, exactly as
    FLYP's `IWildCam` dataset builds them from `iwildcam_metadata/labels.csv` (file in
    mlfoundations/wise-ft `src/datasets/iwildcam_metadata/labels.csv`; rows with y = 99999 dropped).
    Names repeat where WILDS has two category ids for one English name (e.g. 'unknown bird' 82/178).
  fmow: the 62 WILDS FMoW categories in label order, verbatim as FLYP's `FMOW` dataset lists them
    (locuslab/FLYP `src/datasets/fmow.py`, = p-lambda/wilds `fmow_dataset.py` `categories`). They keep
    their underscores ('airport_hangar'), because FLYP feeds them unchanged to its templates (and
    `templates.get('fmow')` relies on that for its article templates).
  cifar10: openai/CLIP `data/prompts.md` "CIFAR10" (= torchvision's CIFAR-10 class order).
  domain_shapes: `CLASSNAMES` of `flyp_jax.data.builders.domain_shapes`, imported on demand.
  patchcamelyon, sst2, caltech101, stanfordcars, flowers102: FLYP's names (locuslab/FLYP at 215d5bb,
    `src/datasets/<name>.py` `classnames`, which datacreation_scripts/ also use), entry i naming TFDS label i
    (rendered SST2: this project's `rendered_sst2` builder). FLYP's own label order is that of its ImageFolder
    copies (sorted folder names); the names are the same, the order here follows the TFDS labels. Caltech101:
    FLYP's copy has no background class, so TFDS's 'background_google' (label 4) is left out of training and
    evaluation through `label_maps.class_table('caltech101')`, which numbers the other 101 labels 0..100.
"""

from __future__ import annotations

import importlib
from typing import Callable, Optional

from flyp_jax import errors, files
from flyp_jax.data import label_maps

# OpenAI's curated ImageNet class names, in ImageNet label order (sorted wnids).
IMAGENET_CLASSNAMES: tuple[str, ...] = (
  # 0-9
  "tench", "goldfish", "great white shark", "tiger shark", "hammerhead shark", "electric ray", "stingray",
  "rooster", "hen", "ostrich",
  # 10-19
  "brambling", "goldfinch", "house finch", "junco", "indigo bunting", "American robin", "bulbul", "jay",
  "magpie", "chickadee",
  # 20-29
  "American dipper", "kite (bird of prey)", "bald eagle", "vulture", "great grey owl", "fire salamander",
  "smooth newt", "newt", "spotted salamander", "axolotl",
  # 30-39
  "American bullfrog", "tree frog", "tailed frog", "loggerhead sea turtle", "leatherback sea turtle",
  "mud turtle", "terrapin", "box turtle", "banded gecko", "green iguana",
  # 40-49
  "Carolina anole", "desert grassland whiptail lizard", "agama", "frilled-necked lizard", "alligator lizard",
  "Gila monster", "European green lizard", "chameleon", "Komodo dragon", "Nile crocodile",
  # 50-59
  "American alligator", "triceratops", "worm snake", "ring-necked snake", "eastern hog-nosed snake",
  "smooth green snake", "kingsnake", "garter snake", "water snake", "vine snake",
  # 60-69
  "night snake", "boa constrictor", "African rock python", "Indian cobra", "green mamba", "sea snake",
  "Saharan horned viper", "eastern diamondback rattlesnake", "sidewinder rattlesnake", "trilobite",
  # 70-79
  "harvestman", "scorpion", "yellow garden spider", "barn spider", "European garden spider",
  "southern black widow", "tarantula", "wolf spider", "tick", "centipede",
  # 80-89
  "black grouse", "ptarmigan", "ruffed grouse", "prairie grouse", "peafowl", "quail", "partridge",
  "african grey parrot", "macaw", "sulphur-crested cockatoo",
  # 90-99
  "lorikeet", "coucal", "bee eater", "hornbill", "hummingbird", "jacamar", "toucan", "duck",
  "red-breasted merganser", "goose",
  # 100-109
  "black swan", "tusker", "echidna", "platypus", "wallaby", "koala", "wombat", "jellyfish", "sea anemone",
  "brain coral",
  # 110-119
  "flatworm", "nematode", "conch", "snail", "slug", "sea slug", "chiton", "chambered nautilus",
  "Dungeness crab", "rock crab",
  # 120-129
  "fiddler crab", "red king crab", "American lobster", "spiny lobster", "crayfish", "hermit crab", "isopod",
  "white stork", "black stork", "spoonbill",
  # 130-139
  "flamingo", "little blue heron", "great egret", "bittern bird", "crane bird", "limpkin",
  "common gallinule", "American coot", "bustard", "ruddy turnstone",
  # 140-149
  "dunlin", "common redshank", "dowitcher", "oystercatcher", "pelican", "king penguin", "albatross",
  "grey whale", "killer whale", "dugong",
  # 150-159
  "sea lion", "Chihuahua", "Japanese Chin", "Maltese", "Pekingese", "Shih Tzu", "King Charles Spaniel",
  "Papillon", "toy terrier", "Rhodesian Ridgeback",
  # 160-169
  "Afghan Hound", "Basset Hound", "Beagle", "Bloodhound", "Bluetick Coonhound", "Black and Tan Coonhound",
  "Treeing Walker Coonhound", "English foxhound", "Redbone Coonhound", "borzoi",
  # 170-179
  "Irish Wolfhound", "Italian Greyhound", "Whippet", "Ibizan Hound", "Norwegian Elkhound", "Otterhound",
  "Saluki", "Scottish Deerhound", "Weimaraner", "Staffordshire Bull Terrier",
  # 180-189
  "American Staffordshire Terrier", "Bedlington Terrier", "Border Terrier", "Kerry Blue Terrier",
  "Irish Terrier", "Norfolk Terrier", "Norwich Terrier", "Yorkshire Terrier", "Wire Fox Terrier",
  "Lakeland Terrier",
  # 190-199
  "Sealyham Terrier", "Airedale Terrier", "Cairn Terrier", "Australian Terrier", "Dandie Dinmont Terrier",
  "Boston Terrier", "Miniature Schnauzer", "Giant Schnauzer", "Standard Schnauzer", "Scottish Terrier",
  # 200-209
  "Tibetan Terrier", "Australian Silky Terrier", "Soft-coated Wheaten Terrier",
  "West Highland White Terrier", "Lhasa Apso", "Flat-Coated Retriever", "Curly-coated Retriever",
  "Golden Retriever", "Labrador Retriever", "Chesapeake Bay Retriever",
  # 210-219
  "German Shorthaired Pointer", "Vizsla", "English Setter", "Irish Setter", "Gordon Setter", "Brittany dog",
  "Clumber Spaniel", "English Springer Spaniel", "Welsh Springer Spaniel", "Cocker Spaniel",
  # 220-229
  "Sussex Spaniel", "Irish Water Spaniel", "Kuvasz", "Schipperke", "Groenendael dog", "Malinois", "Briard",
  "Australian Kelpie", "Komondor", "Old English Sheepdog",
  # 230-239
  "Shetland Sheepdog", "collie", "Border Collie", "Bouvier des Flandres dog", "Rottweiler",
  "German Shepherd Dog", "Dobermann", "Miniature Pinscher", "Greater Swiss Mountain Dog",
  "Bernese Mountain Dog",
  # 240-249
  "Appenzeller Sennenhund", "Entlebucher Sennenhund", "Boxer", "Bullmastiff", "Tibetan Mastiff",
  "French Bulldog", "Great Dane", "St. Bernard", "husky", "Alaskan Malamute",
  # 250-259
  "Siberian Husky", "Dalmatian", "Affenpinscher", "Basenji", "pug", "Leonberger", "Newfoundland dog",
  "Great Pyrenees dog", "Samoyed", "Pomeranian",
  # 260-269
  "Chow Chow", "Keeshond", "brussels griffon", "Pembroke Welsh Corgi", "Cardigan Welsh Corgi", "Toy Poodle",
  "Miniature Poodle", "Standard Poodle", "Mexican hairless dog (xoloitzcuintli)", "grey wolf",
  # 270-279
  "Alaskan tundra wolf", "red wolf or maned wolf", "coyote", "dingo", "dhole", "African wild dog", "hyena",
  "red fox", "kit fox", "Arctic fox",
  # 280-289
  "grey fox", "tabby cat", "tiger cat", "Persian cat", "Siamese cat", "Egyptian Mau", "cougar", "lynx",
  "leopard", "snow leopard",
  # 290-299
  "jaguar", "lion", "tiger", "cheetah", "brown bear", "American black bear", "polar bear", "sloth bear",
  "mongoose", "meerkat",
  # 300-309
  "tiger beetle", "ladybug", "ground beetle", "longhorn beetle", "leaf beetle", "dung beetle",
  "rhinoceros beetle", "weevil", "fly", "bee",
  # 310-319
  "ant", "grasshopper", "cricket insect", "stick insect", "cockroach", "praying mantis", "cicada",
  "leafhopper", "lacewing", "dragonfly",
  # 320-329
  "damselfly", "red admiral butterfly", "ringlet butterfly", "monarch butterfly", "small white butterfly",
  "sulphur butterfly", "gossamer-winged butterfly", "starfish", "sea urchin", "sea cucumber",
  # 330-339
  "cottontail rabbit", "hare", "Angora rabbit", "hamster", "porcupine", "fox squirrel", "marmot", "beaver",
  "guinea pig", "common sorrel horse",
  # 340-349
  "zebra", "pig", "wild boar", "warthog", "hippopotamus", "ox", "water buffalo", "bison",
  "ram (adult male sheep)", "bighorn sheep",
  # 350-359
  "Alpine ibex", "hartebeest", "impala (antelope)", "gazelle", "arabian camel", "llama", "weasel", "mink",
  "European polecat", "black-footed ferret",
  # 360-369
  "otter", "skunk", "badger", "armadillo", "three-toed sloth", "orangutan", "gorilla", "chimpanzee",
  "gibbon", "siamang",
  # 370-379
  "guenon", "patas monkey", "baboon", "macaque", "langur", "black-and-white colobus", "proboscis monkey",
  "marmoset", "white-headed capuchin", "howler monkey",
  # 380-389
  "titi monkey", "Geoffroy's spider monkey", "common squirrel monkey", "ring-tailed lemur", "indri",
  "Asian elephant", "African bush elephant", "red panda", "giant panda", "snoek fish",
  # 390-399
  "eel", "silver salmon", "rock beauty fish", "clownfish", "sturgeon", "gar fish", "lionfish", "pufferfish",
  "abacus", "abaya",
  # 400-409
  "academic gown", "accordion", "acoustic guitar", "aircraft carrier", "airliner", "airship", "altar",
  "ambulance", "amphibious vehicle", "analog clock",
  # 410-419
  "apiary", "apron", "trash can", "assault rifle", "backpack", "bakery", "balance beam", "balloon",
  "ballpoint pen", "Band-Aid",
  # 420-429
  "banjo", "baluster / handrail", "barbell", "barber chair", "barbershop", "barn", "barometer", "barrel",
  "wheelbarrow", "baseball",
  # 430-439
  "basketball", "bassinet", "bassoon", "swimming cap", "bath towel", "bathtub", "station wagon",
  "lighthouse", "beaker", "military hat (bearskin or shako)",
  # 440-449
  "beer bottle", "beer glass", "bell tower", "baby bib", "tandem bicycle", "bikini", "ring binder",
  "binoculars", "birdhouse", "boathouse",
  # 450-459
  "bobsleigh", "bolo tie", "poke bonnet", "bookcase", "bookstore", "bottle cap", "hunting bow", "bow tie",
  "brass memorial plaque", "bra",
  # 460-469
  "breakwater", "breastplate", "broom", "bucket", "buckle", "bulletproof vest", "high-speed train",
  "butcher shop", "taxicab", "cauldron",
  # 470-479
  "candle", "cannon", "canoe", "can opener", "cardigan", "car mirror", "carousel", "tool kit",
  "cardboard box / carton", "car wheel",
  # 480-489
  "automated teller machine", "cassette", "cassette player", "castle", "catamaran", "CD player", "cello",
  "mobile phone", "chain", "chain-link fence",
  # 490-499
  "chain mail", "chainsaw", "storage chest", "chiffonier", "bell or wind chime", "china cabinet",
  "Christmas stocking", "church", "movie theater", "cleaver",
  # 500-509
  "cliff dwelling", "cloak", "clogs", "cocktail shaker", "coffee mug", "coffeemaker", "spiral or coil",
  "combination lock", "computer keyboard", "candy store",
  # 510-519
  "container ship", "convertible", "corkscrew", "cornet", "cowboy boot", "cowboy hat", "cradle",
  "construction crane", "crash helmet", "crate",
  # 520-529
  "infant bed", "Crock Pot", "croquet ball", "crutch", "cuirass", "dam", "desk", "desktop computer",
  "rotary dial telephone", "diaper",
  # 530-539
  "digital clock", "digital watch", "dining table", "dishcloth", "dishwasher", "disc brake", "dock",
  "dog sled", "dome", "doormat",
  # 540-549
  "drilling rig", "drum", "drumstick", "dumbbell", "Dutch oven", "electric fan", "electric guitar",
  "electric locomotive", "entertainment center", "envelope",
  # 550-559
  "espresso machine", "face powder", "feather boa", "filing cabinet", "fireboat", "fire truck",
  "fire screen", "flagpole", "flute", "folding chair",
  # 560-569
  "football helmet", "forklift", "fountain", "fountain pen", "four-poster bed", "freight car", "French horn",
  "frying pan", "fur coat", "garbage truck",
  # 570-579
  "gas mask or respirator", "gas pump", "goblet", "go-kart", "golf ball", "golf cart", "gondola", "gong",
  "gown", "grand piano",
  # 580-589
  "greenhouse", "radiator grille", "grocery store", "guillotine", "hair clip", "hair spray", "half-track",
  "hammer", "hamper", "hair dryer",
  # 590-599
  "hand-held computer", "handkerchief", "hard disk drive", "harmonica", "harp", "combine harvester",
  "hatchet", "holster", "home theater", "honeycomb",
  # 600-609
  "hook", "hoop skirt", "gymnastic horizontal bar", "horse-drawn vehicle", "hourglass", "iPod",
  "clothes iron", "carved pumpkin", "jeans", "jeep",
  # 610-619
  "T-shirt", "jigsaw puzzle", "rickshaw", "joystick", "kimono", "knee pad", "knot", "lab coat", "ladle",
  "lampshade",
  # 620-629
  "laptop computer", "lawn mower", "lens cap", "letter opener", "library", "lifeboat", "lighter",
  "limousine", "ocean liner", "lipstick",
  # 630-639
  "slip-on shoe", "lotion", "music speaker", "loupe magnifying glass", "sawmill", "magnetic compass",
  "messenger bag", "mailbox", "tights", "one-piece bathing suit",
  # 640-649
  "manhole cover", "maraca", "marimba", "mask", "matchstick", "maypole", "maze", "measuring cup",
  "medicine cabinet", "megalith",
  # 650-659
  "microphone", "microwave oven", "military uniform", "milk can", "minibus", "miniskirt", "minivan",
  "missile", "mitten", "mixing bowl",
  # 660-669
  "mobile home", "ford model t", "modem", "monastery", "monitor", "moped", "mortar and pestle",
  "graduation cap", "mosque", "mosquito net",
  # 670-679
  "vespa", "mountain bike", "tent", "computer mouse", "mousetrap", "moving van", "muzzle", "metal nail",
  "neck brace", "necklace",
  # 680-689
  "baby pacifier", "notebook computer", "obelisk", "oboe", "ocarina", "odometer", "oil filter", "pipe organ",
  "oscilloscope", "overskirt",
  # 690-699
  "bullock cart", "oxygen mask", "product packet / packaging", "paddle", "paddle wheel", "padlock",
  "paintbrush", "pajamas", "palace", "pan flute",
  # 700-709
  "paper towel", "parachute", "parallel bars", "park bench", "parking meter", "railroad car", "patio",
  "payphone", "pedestal", "pencil case",
  # 710-719
  "pencil sharpener", "perfume", "Petri dish", "photocopier", "plectrum", "Pickelhaube", "picket fence",
  "pickup truck", "pier", "piggy bank",
  # 720-729
  "pill bottle", "pillow", "ping-pong ball", "pinwheel", "pirate ship", "drink pitcher", "block plane",
  "planetarium", "plastic bag", "plate rack",
  # 730-739
  "farm plow", "plunger", "Polaroid camera", "pole", "police van", "poncho", "pool table", "soda bottle",
  "plant pot", "potter's wheel",
  # 740-749
  "power drill", "prayer rug", "printer", "prison", "missile", "projector", "hockey puck", "punching bag",
  "purse", "quill",
  # 750-759
  "quilt", "race car", "racket", "radiator", "radio", "radio telescope", "rain barrel",
  "recreational vehicle", "fishing casting reel", "reflex camera",
  # 760-769
  "refrigerator", "remote control", "restaurant", "revolver", "rifle", "rocking chair", "rotisserie",
  "eraser", "rugby ball", "ruler measuring stick",
  # 770-779
  "sneaker", "safe", "safety pin", "salt shaker", "sandal", "sarong", "saxophone", "scabbard",
  "weighing scale", "school bus",
  # 780-789
  "schooner", "scoreboard", "CRT monitor", "screw", "screwdriver", "seat belt", "sewing machine", "shield",
  "shoe store", "shoji screen / room divider",
  # 790-799
  "shopping basket", "shopping cart", "shovel", "shower cap", "shower curtain", "ski", "balaclava ski mask",
  "sleeping bag", "slide rule", "sliding door",
  # 800-809
  "slot machine", "snorkel", "snowmobile", "snowplow", "soap dispenser", "soccer ball", "sock",
  "solar thermal collector", "sombrero", "soup bowl",
  # 810-819
  "keyboard space bar", "space heater", "space shuttle", "spatula", "motorboat", "spider web", "spindle",
  "sports car", "spotlight", "stage",
  # 820-829
  "steam locomotive", "through arch bridge", "steel drum", "stethoscope", "scarf", "stone wall", "stopwatch",
  "stove", "strainer", "tram",
  # 830-839
  "stretcher", "couch", "stupa", "submarine", "suit", "sundial", "sunglasses", "sunglasses", "sunscreen",
  "suspension bridge",
  # 840-849
  "mop", "sweatshirt", "swim trunks / shorts", "swing", "electrical switch", "syringe", "table lamp", "tank",
  "tape player", "teapot",
  # 850-859
  "teddy bear", "television", "tennis ball", "thatched roof", "front curtain", "thimble",
  "threshing machine", "throne", "tile roof", "toaster",
  # 860-869
  "tobacco shop", "toilet seat", "torch", "totem pole", "tow truck", "toy store", "tractor",
  "semi-trailer truck", "tray", "trench coat",
  # 870-879
  "tricycle", "trimaran", "tripod", "triumphal arch", "trolleybus", "trombone", "hot tub", "turnstile",
  "typewriter keyboard", "umbrella",
  # 880-889
  "unicycle", "upright piano", "vacuum cleaner", "vase", "vaulted or arched ceiling", "velvet fabric",
  "vending machine", "vestment", "viaduct", "violin",
  # 890-899
  "volleyball", "waffle iron", "wall clock", "wallet", "wardrobe", "military aircraft", "sink",
  "washing machine", "water bottle", "water jug",
  # 900-909
  "water tower", "whiskey jug", "whistle", "hair wig", "window screen", "window shade", "Windsor tie",
  "wine bottle", "airplane wing", "wok",
  # 910-919
  "wooden spoon", "wool", "split-rail fence", "shipwreck", "sailboat", "yurt", "website", "comic book",
  "crossword", "traffic or street sign",
  # 920-929
  "traffic light", "dust jacket", "menu", "plate", "guacamole", "consomme", "hot pot", "trifle", "ice cream",
  "popsicle",
  # 930-939
  "baguette", "bagel", "pretzel", "cheeseburger", "hot dog", "mashed potatoes", "cabbage", "broccoli",
  "cauliflower", "zucchini",
  # 940-949
  "spaghetti squash", "acorn squash", "butternut squash", "cucumber", "artichoke", "bell pepper", "cardoon",
  "mushroom", "Granny Smith apple", "strawberry",
  # 950-959
  "orange", "lemon", "fig", "pineapple", "banana", "jackfruit", "cherimoya (custard apple)", "pomegranate",
  "hay", "carbonara",
  # 960-969
  "chocolate syrup", "dough", "meatloaf", "pizza", "pot pie", "burrito", "red wine", "espresso", "tea cup",
  "eggnog",
  # 970-979
  "mountain", "bubble", "cliff", "coral reef", "geyser", "lakeshore", "promontory", "sandbar", "beach",
  "valley",
  # 980-989
  "volcano", "baseball player", "bridegroom", "scuba diver", "rapeseed", "daisy", "yellow lady's slipper",
  "corn", "acorn", "rose hip",
  # 990-999
  "horse chestnut seed", "coral fungus", "agaric", "gyromitra", "stinkhorn mushroom", "earth star fungus",
  "hen of the woods mushroom", "bolete", "corn cob", "toilet paper",
)

# WILDS iWildCam label y -> FLYP's class name (labels.csv `english`, lower-cased).
IWILDCAM_CLASSNAMES: tuple[str, ...] = (
  "empty",  # 0
  "white-lipped peccary",  # 1
  "central american agouti",  # 2
  "lowland paca",  # 3
  "cougar",  # 4
  "south american tapir",  # 5
  "collared peccary",  # 6
  "red brocket",  # 7
  "ocelot",  # 8
  "ruddy quail-dove",  # 9
  "south american coati",  # 10
  "nine-banded armadillo",  # 11
  "tayra",  # 12
  "common opossum",  # 13
  "crab-eating raccoon",  # 14
  "jaguar",  # 15
  "giant anteater",  # 16
  "great tinamou",  # 17
  "tapeti",  # 18
  "jaguarundi",  # 19
  "margay",  # 20
  "brown brocket",  # 21
  "gray four-eyed opossum",  # 22
  "wild goat",  # 23
  "cattle cow bull",  # 24
  "sheep",  # 25
  "wolf",  # 26
  "scrub hare",  # 27
  "olive baboon",  # 28
  "common genet",  # 29
  "cape bushbuck",  # 30
  "slender mongoose",  # 31
  "african bush elephant",  # 32
  "gambian pouched rat",  # 33
  "steenbok",  # 34
  "striped hyena",  # 35
  "impala",  # 36
  "spotted hyena",  # 37
  "caracal",  # 38
  "wild horse",  # 39
  "lion",  # 40
  "common eland",  # 41
  "waterbuck",  # 42
  "common warthog",  # 43
  "leopard",  # 44
  "white-tailed mongoose",  # 45
  "black-backed jackal",  # 46
  "african buffalo",  # 47
  "plains zebra",  # 48
  "giraffe",  # 49
  "hartebeest",  # 50
  "vervet monkey",  # 51
  "günther's dik-dik",  # 52
  "bushpig",  # 53
  "grant's gazelle",  # 54
  "thomson's gazelle",  # 55
  "common ostrich",  # 56
  "aardvark",  # 57
  "cheetah",  # 58
  "white-bellied bustard",  # 59
  "wildcat",  # 60
  "east african oryx",  # 61
  "buff-crested bustard",  # 62
  "kori bustard",  # 63
  "black-bellied bustard",  # 64
  "great argus",  # 65
  "leopard cat",  # 66
  "banded palm civet",  # 67
  "indian muntjac",  # 68
  "wild boar",  # 69
  "sun bear",  # 70
  "sambar deer",  # 71
  "malayan porcupine",  # 72
  "asian golden cat",  # 73
  "tiger",  # 74
  "three-striped ground squirrel",  # 75
  "common emerald dove",  # 76
  "cape genet",  # 77
  "crested porcupine",  # 78
  "african wild dog",  # 79
  "rock hyrax",  # 80
  "dog",  # 81
  "unknown bird",  # 82
  "unknown bat",  # 83
  "amazonian motmot",  # 84
  "black agouti",  # 85
  "geotrygon",  # 86
  "white-nosed coati",  # 87
  "northern tamandua",  # 88
  "opossum",  # 89
  "crested guan",  # 90
  "hummingbird",  # 91
  "plain parakeet",  # 92
  "dromedary",  # 93
  "bat-eared fox",  # 94
  "vulturine guineafowl",  # 95
  "zebra",  # 96
  "aardwolf",  # 97
  "serval",  # 98
  "greater kudu",  # 99
  "hippopotamus",  # 100
  "spotted thick-knee",  # 101
  "masked palm civet",  # 102
  "marbled cat",  # 103
  "dhole",  # 104
  "asian water monitor",  # 105
  "yellow-throated marten",  # 106
  "banded linsang",  # 107
  "crested partridge",  # 108
  "salvadori's pheasant",  # 109
  "bronze-tailed peacock-pheasant",  # 110
  "sunda pangolin",  # 111
  "sumatran serow",  # 112
  "macaque",  # 113
  "handsome spurfowl",  # 114
  "l'hoest's monkey",  # 115
  "black-fronted duiker",  # 116
  "african brush-tailed porcupine",  # 117
  "chimpanzee",  # 118
  "blue monkey",  # 119
  "mountain squirrel",  # 120
  "western yellow wagtail",  # 121
  "yellow-whiskered greenbul",  # 122
  "little greenbul",  # 123
  "charming thicket rat",  # 124
  "forest giant squirrel",  # 125
  "boehm's bush squirrel",  # 126
  "yellow-backed duiker",  # 127
  "common rufous-nosed rat",  # 128
  "moustached grass warbler",  # 129
  "peters's striped mouse",  # 130
  "african wading rat",  # 131
  "stella wood mouse",  # 132
  "servaline genet",  # 133
  "side-striped jackal",  # 134
  "african pygmy mouse",  # 135
  "ross's turaco",  # 136
  "tambourine dove",  # 137
  "tullberg's soft-furred mouse",  # 138
  "big-eared swamp rat",  # 139
  "egyptian goose",  # 140
  "link rat",  # 141
  "grey-winged francolin",  # 142
  "olive thrush",  # 143
  "brocket deer",  # 144
  "gray fox",  # 145
  "ocellated turkey",  # 146
  "great curassow",  # 147
  "lowland paca",  # 148
  "baird's tapir",  # 149
  "raccoon",  # 150
  "white-tailed deer",  # 151
  "grey-headed dove",  # 152
  "central american red brocket",  # 153
  "striped hog-nosed skunk",  # 154
  "yucatan brown brocket",  # 155
  "plain chachalaca",  # 156
  "thomas's langur",  # 157
  "sunda clouded leopard",  # 158
  "sumatran hog badger",  # 159
  "mouse-deer",  # 160
  "sumatran treepie",  # 161
  "rufous-vented niltava",  # 162
  "silver-eared mesia",  # 163
  "red-billed partridge",  # 164
  "gallopheasants",  # 165
  "javan whistling thrush",  # 166
  "crestless fireback",  # 167
  "crested serpent eagle",  # 168
  "blue whistling thrush",  # 169
  "collared mongoose",  # 170
  "crab-eating fox",  # 171
  "motorcycle",  # 172
  "deer mouse",  # 173
  "jaguarundi",  # 174
  "bare-throated tiger heron",  # 175
  "blue ground dove",  # 176
  "red squirrel",  # 177
  "unknown bird",  # 178
  "grey-cowled wood rail",  # 179
  "unknown dove",  # 180
  "central american red brocket",  # 181
)

# WILDS FMoW label y -> category, as in FLYP/WILDS.
FMOW_CLASSNAMES: tuple[str, ...] = (
  "airport", "airport_hangar", "airport_terminal", "amusement_park", "aquaculture", "archaeological_site",
  "barn", "border_checkpoint", "burial_site", "car_dealership", "construction_site", "crop_field", "dam",
  "debris_or_rubble", "educational_institution", "electric_substation", "factory_or_powerplant",
  "fire_station", "flooded_road", "fountain", "gas_station", "golf_course", "ground_transportation_station",
  "helipad", "hospital", "impoverished_settlement", "interchange", "lake_or_pond", "lighthouse",
  "military_facility", "multi-unit_residential", "nuclear_powerplant", "office_building",
  "oil_or_gas_facility", "park", "parking_lot_or_garage", "place_of_worship", "police_station", "port",
  "prison", "race_track", "railway_bridge", "recreational_facility", "road_bridge", "runway", "shipyard",
  "shopping_mall", "single-unit_residential", "smokestack", "solar_farm", "space_facility", "stadium",
  "storage_tank", "surface_mine", "swimming_pool", "toll_booth", "tower", "tunnel_opening", "waste_disposal",
  "water_treatment_facility", "wind_farm", "zoo",
)

CIFAR10_CLASSNAMES: tuple[str, ...] = (
  "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)


# FLYP `PatchCamelyon.classnames` (src/datasets/patchcamelyon.py): label 0 no tumour, 1 tumour (the folders '0'
# and '1' its datacreation_scripts/patchcamelyon.py writes, = TFDS patch_camelyon's labels).
PATCHCAMELYON_CLASSNAMES: tuple[str, ...] = (
  "lymph node", "lymph node containing metastatic tumor tissue",
)

# FLYP `sst2.classnames` (src/datasets/sst2.py): rendered SST2's sorted folder names, in label order.
SST2_CLASSNAMES: tuple[str, ...] = (
  "negative", "positive",
)

# FLYP's 101 Caltech101 names (src/datasets/caltech101.py), in TFDS caltech101's label order without its
# 'background_google' class (label 4), which FLYP leaves out (see the module docstring).
CALTECH101_CLASSNAMES: tuple[str, ...] = (
  "accordion", "airplane", "anchor", "ant", "barrel", "bass", "beaver", "binocular", "bonsai", "brain",
  "brontosaurus", "buddha", "butterfly", "camera", "cannon", "side of a car", "ceiling fan", "cellphone", "chair",
  "chandelier", "body of a cougar cat", "face of a cougar cat", "crab", "crayfish", "crocodile",
  "head of a  crocodile", "cup", "dalmatian", "dollar bill", "dolphin", "dragonfly", "electric guitar", "elephant",
  "emu", "euphonium", "ewer", "off-center face", "centered face", "ferry", "flamingo", "head of a flamingo",
  "garfield", "gerenuk", "gramophone", "grand piano", "hawksbill", "headphone", "hedgehog", "helicopter", "ibis",
  "inline skate", "joshua tree", "kangaroo", "ketch", "lamp", "laptop", "leopard", "llama", "lobster", "lotus",
  "mandolin", "mayfly", "menorah", "metronome", "minaret", "motorbike", "nautilus", "octopus", "okapi", "pagoda",
  "panda", "pigeon", "pizza", "platypus", "pyramid", "revolver", "rhino", "rooster", "saxophone", "schooner",
  "scissors", "scorpion", "sea horse", "snoopy (cartoon beagle)", "soccer ball", "stapler", "starfish",
  "stegosaurus", "stop sign", "strawberry", "sunflower", "tick", "trilobite", "umbrella", "watch", "water lilly",
  "wheelchair", "wild cat", "windsor chair", "wrench", "yin and yang symbol",
)

# FLYP's 196 StanfordCars names (src/datasets/stanfordcars.py), in TFDS cars196's label order (the devkit's
# class order); FLYP's name of a class is the devkit's with '/' -> '-' ('Ram C-V Cargo Van Minivan 2012').
STANFORDCARS_CLASSNAMES: tuple[str, ...] = (
  "AM General Hummer SUV 2000", "Acura RL Sedan 2012", "Acura TL Sedan 2012", "Acura TL Type-S 2008",
  "Acura TSX Sedan 2012", "Acura Integra Type R 2001", "Acura ZDX Hatchback 2012",
  "Aston Martin V8 Vantage Convertible 2012", "Aston Martin V8 Vantage Coupe 2012",
  "Aston Martin Virage Convertible 2012", "Aston Martin Virage Coupe 2012", "Audi RS 4 Convertible 2008",
  "Audi A5 Coupe 2012", "Audi TTS Coupe 2012", "Audi R8 Coupe 2012", "Audi V8 Sedan 1994", "Audi 100 Sedan 1994",
  "Audi 100 Wagon 1994", "Audi TT Hatchback 2011", "Audi S6 Sedan 2011", "Audi S5 Convertible 2012",
  "Audi S5 Coupe 2012", "Audi S4 Sedan 2012", "Audi S4 Sedan 2007", "Audi TT RS Coupe 2012",
  "BMW ActiveHybrid 5 Sedan 2012", "BMW 1 Series Convertible 2012", "BMW 1 Series Coupe 2012",
  "BMW 3 Series Sedan 2012", "BMW 3 Series Wagon 2012", "BMW 6 Series Convertible 2007", "BMW X5 SUV 2007",
  "BMW X6 SUV 2012", "BMW M3 Coupe 2012", "BMW M5 Sedan 2010", "BMW M6 Convertible 2010", "BMW X3 SUV 2012",
  "BMW Z4 Convertible 2012", "Bentley Continental Supersports Conv. Convertible 2012", "Bentley Arnage Sedan 2009",
  "Bentley Mulsanne Sedan 2011", "Bentley Continental GT Coupe 2012", "Bentley Continental GT Coupe 2007",
  "Bentley Continental Flying Spur Sedan 2007", "Bugatti Veyron 16.4 Convertible 2009",
  "Bugatti Veyron 16.4 Coupe 2009", "Buick Regal GS 2012", "Buick Rainier SUV 2007", "Buick Verano Sedan 2012",
  "Buick Enclave SUV 2012", "Cadillac CTS-V Sedan 2012", "Cadillac SRX SUV 2012",
  "Cadillac Escalade EXT Crew Cab 2007", "Chevrolet Silverado 1500 Hybrid Crew Cab 2012",
  "Chevrolet Corvette Convertible 2012", "Chevrolet Corvette ZR1 2012",
  "Chevrolet Corvette Ron Fellows Edition Z06 2007", "Chevrolet Traverse SUV 2012",
  "Chevrolet Camaro Convertible 2012", "Chevrolet HHR SS 2010", "Chevrolet Impala Sedan 2007",
  "Chevrolet Tahoe Hybrid SUV 2012", "Chevrolet Sonic Sedan 2012", "Chevrolet Express Cargo Van 2007",
  "Chevrolet Avalanche Crew Cab 2012", "Chevrolet Cobalt SS 2010", "Chevrolet Malibu Hybrid Sedan 2010",
  "Chevrolet TrailBlazer SS 2009", "Chevrolet Silverado 2500HD Regular Cab 2012",
  "Chevrolet Silverado 1500 Classic Extended Cab 2007", "Chevrolet Express Van 2007",
  "Chevrolet Monte Carlo Coupe 2007", "Chevrolet Malibu Sedan 2007", "Chevrolet Silverado 1500 Extended Cab 2012",
  "Chevrolet Silverado 1500 Regular Cab 2012", "Chrysler Aspen SUV 2009", "Chrysler Sebring Convertible 2010",
  "Chrysler Town and Country Minivan 2012", "Chrysler 300 SRT-8 2010", "Chrysler Crossfire Convertible 2008",
  "Chrysler PT Cruiser Convertible 2008", "Daewoo Nubira Wagon 2002", "Dodge Caliber Wagon 2012",
  "Dodge Caliber Wagon 2007", "Dodge Caravan Minivan 1997", "Dodge Ram Pickup 3500 Crew Cab 2010",
  "Dodge Ram Pickup 3500 Quad Cab 2009", "Dodge Sprinter Cargo Van 2009", "Dodge Journey SUV 2012",
  "Dodge Dakota Crew Cab 2010", "Dodge Dakota Club Cab 2007", "Dodge Magnum Wagon 2008",
  "Dodge Challenger SRT8 2011", "Dodge Durango SUV 2012", "Dodge Durango SUV 2007", "Dodge Charger Sedan 2012",
  "Dodge Charger SRT-8 2009", "Eagle Talon Hatchback 1998", "FIAT 500 Abarth 2012", "FIAT 500 Convertible 2012",
  "Ferrari FF Coupe 2012", "Ferrari California Convertible 2012", "Ferrari 458 Italia Convertible 2012",
  "Ferrari 458 Italia Coupe 2012", "Fisker Karma Sedan 2012", "Ford F-450 Super Duty Crew Cab 2012",
  "Ford Mustang Convertible 2007", "Ford Freestar Minivan 2007", "Ford Expedition EL SUV 2009", "Ford Edge SUV 2012",
  "Ford Ranger SuperCab 2011", "Ford GT Coupe 2006", "Ford F-150 Regular Cab 2012", "Ford F-150 Regular Cab 2007",
  "Ford Focus Sedan 2007", "Ford E-Series Wagon Van 2012", "Ford Fiesta Sedan 2012", "GMC Terrain SUV 2012",
  "GMC Savana Van 2012", "GMC Yukon Hybrid SUV 2012", "GMC Acadia SUV 2012", "GMC Canyon Extended Cab 2012",
  "Geo Metro Convertible 1993", "HUMMER H3T Crew Cab 2010", "HUMMER H2 SUT Crew Cab 2009",
  "Honda Odyssey Minivan 2012", "Honda Odyssey Minivan 2007", "Honda Accord Coupe 2012", "Honda Accord Sedan 2012",
  "Hyundai Veloster Hatchback 2012", "Hyundai Santa Fe SUV 2012", "Hyundai Tucson SUV 2012",
  "Hyundai Veracruz SUV 2012", "Hyundai Sonata Hybrid Sedan 2012", "Hyundai Elantra Sedan 2007",
  "Hyundai Accent Sedan 2012", "Hyundai Genesis Sedan 2012", "Hyundai Sonata Sedan 2012",
  "Hyundai Elantra Touring Hatchback 2012", "Hyundai Azera Sedan 2012", "Infiniti G Coupe IPL 2012",
  "Infiniti QX56 SUV 2011", "Isuzu Ascender SUV 2008", "Jaguar XK XKR 2012", "Jeep Patriot SUV 2012",
  "Jeep Wrangler SUV 2012", "Jeep Liberty SUV 2012", "Jeep Grand Cherokee SUV 2012", "Jeep Compass SUV 2012",
  "Lamborghini Reventon Coupe 2008", "Lamborghini Aventador Coupe 2012",
  "Lamborghini Gallardo LP 570-4 Superleggera 2012", "Lamborghini Diablo Coupe 2001",
  "Land Rover Range Rover SUV 2012", "Land Rover LR2 SUV 2012", "Lincoln Town Car Sedan 2011",
  "MINI Cooper Roadster Convertible 2012", "Maybach Landaulet Convertible 2012", "Mazda Tribute SUV 2011",
  "McLaren MP4-12C Coupe 2012", "Mercedes-Benz 300-Class Convertible 1993", "Mercedes-Benz C-Class Sedan 2012",
  "Mercedes-Benz SL-Class Coupe 2009", "Mercedes-Benz E-Class Sedan 2012", "Mercedes-Benz S-Class Sedan 2012",
  "Mercedes-Benz Sprinter Van 2012", "Mitsubishi Lancer Sedan 2012", "Nissan Leaf Hatchback 2012",
  "Nissan NV Passenger Van 2012", "Nissan Juke Hatchback 2012", "Nissan 240SX Coupe 1998",
  "Plymouth Neon Coupe 1999", "Porsche Panamera Sedan 2012", "Ram C-V Cargo Van Minivan 2012",
  "Rolls-Royce Phantom Drophead Coupe Convertible 2012", "Rolls-Royce Ghost Sedan 2012",
  "Rolls-Royce Phantom Sedan 2012", "Scion xD Hatchback 2012", "Spyker C8 Convertible 2009", "Spyker C8 Coupe 2009",
  "Suzuki Aerio Sedan 2007", "Suzuki Kizashi Sedan 2012", "Suzuki SX4 Hatchback 2012", "Suzuki SX4 Sedan 2012",
  "Tesla Model S Sedan 2012", "Toyota Sequoia SUV 2012", "Toyota Camry Sedan 2012", "Toyota Corolla Sedan 2012",
  "Toyota 4Runner SUV 2012", "Volkswagen Golf Hatchback 2012", "Volkswagen Golf Hatchback 1991",
  "Volkswagen Beetle Hatchback 2012", "Volvo C30 Hatchback 2012", "Volvo 240 Sedan 1993", "Volvo XC90 SUV 2007",
  "smart fortwo Convertible 2012",
)

# FLYP datacreation_scripts/flowers102.py `open_ai_classes`: Flowers102's label order (= TFDS
# oxford_flowers102's; three names are CLIP's, not TFDS's: 'globe flower', 'pink and yellow dahlia', 'air plant').
FLOWERS102_CLASSNAMES: tuple[str, ...] = (
  "pink primrose", "hard-leaved pocket orchid", "canterbury bells", "sweet pea", "english marigold", "tiger lily",
  "moon orchid", "bird of paradise", "monkshood", "globe thistle", "snapdragon", "colt's foot", "king protea",
  "spear thistle", "yellow iris", "globe flower", "purple coneflower", "peruvian lily", "balloon flower",
  "giant white arum lily", "fire lily", "pincushion flower", "fritillary", "red ginger", "grape hyacinth",
  "corn poppy", "prince of wales feathers", "stemless gentian", "artichoke", "sweet william", "carnation",
  "garden phlox", "love in the mist", "mexican aster", "alpine sea holly", "ruby-lipped cattleya", "cape flower",
  "great masterwort", "siam tulip", "lenten rose", "barbeton daisy", "daffodil", "sword lily", "poinsettia",
  "bolero deep blue", "wallflower", "marigold", "buttercup", "oxeye daisy", "common dandelion", "petunia",
  "wild pansy", "primula", "sunflower", "pelargonium", "bishop of llandaff", "gaura", "geranium", "orange dahlia",
  "pink and yellow dahlia", "cautleya spicata", "japanese anemone", "black-eyed susan", "silverbush",
  "californian poppy", "osteospermum", "spring crocus", "bearded iris", "windflower", "tree poppy", "gazania",
  "azalea", "water lily", "rose", "thorn apple", "morning glory", "passion flower", "lotus", "toad lily",
  "anthurium", "frangipani", "clematis", "hibiscus", "columbine", "desert-rose", "tree mallow", "magnolia",
  "cyclamen", "watercress", "canna lily", "hippeastrum", "bee balm", "air plant", "foxglove", "bougainvillea",
  "camellia", "mallow", "mexican petunia", "bromelia", "blanket flower", "trumpet creeper", "blackberry lily",
)


def _subset(name: str) -> tuple[str, ...]:
  return tuple(IMAGENET_CLASSNAMES[i] for i in label_maps.subset_indices(name))


def _domain_shapes() -> tuple[str, ...]:
  # Imported lazily: the builder module pulls in TensorFlow and TFDS, which plain name look-ups do not need.
  module = importlib.import_module("flyp_jax.data.builders.domain_shapes")
  return tuple(module.CLASSNAMES)


_REGISTRY: dict[str, Callable[[], tuple[str, ...]]] = {
  "imagenet": lambda: IMAGENET_CLASSNAMES,
  "imagenet_r": lambda: _subset("imagenet_r"),
  "imagenet_a": lambda: _subset("imagenet_a"),
  "objectnet": lambda: tuple(label_maps.objectnet_classnames()),
  "iwildcam": lambda: IWILDCAM_CLASSNAMES,
  "fmow": lambda: FMOW_CLASSNAMES,
  "cifar10": lambda: CIFAR10_CLASSNAMES,
  "domain_shapes": _domain_shapes,
  "patchcamelyon": lambda: PATCHCAMELYON_CLASSNAMES,
  "sst2": lambda: SST2_CLASSNAMES,
  "caltech101": lambda: CALTECH101_CLASSNAMES,
  "stanfordcars": lambda: STANFORDCARS_CLASSNAMES,
  "flowers102": lambda: FLOWERS102_CLASSNAMES,
}


def names() -> list[str]:
  """The class-name lists `get` accepts by name, sorted."""
  return sorted(_REGISTRY)


FROM_DATASET = "tfds"  # data.classnames: the dataset's own label names (its ClassLabel feature)

FORMS = (f"a list name ({', '.join(names())}), {FROM_DATASET!r} (the dataset's own label names), "
         f"'tfds:DATASET' (another dataset's), a text file with one name per line, or a comma-separated list "
         f"('cat,dog')")


def get(name: str, dataset: str = "", data_dir: Optional[str] = None) -> list[str]:
  """A fresh list of class names; entry i names label i.

  `name` is a registered list (`names()`), "tfds" (the label names of `dataset`'s 'label' feature, e.g. an image
  folder's class folders), "tfds:DATASET", a text file with one name per line, or a comma-separated list.

  Raises:
    errors.BadValue: `name` is none of these (the message lists the forms), or the list is empty or repeats a name.
  """
  if name in _REGISTRY:
    return list(_REGISTRY[name]())
  if name == FROM_DATASET or name.startswith(FROM_DATASET + ":"):
    found = _dataset_names(name.partition(":")[2] or dataset, data_dir)
  elif "," in name:
    found = [n.strip() for n in name.split(",")]
  elif name and files.exists(name) and not files.isdir(name):
    with files.open_file(name) as f:
      found = [line.strip() for line in f.read().splitlines() if line.strip()]
  else:
    raise errors.BadValue(f"unknown class-name list {name!r} (and no such file); data.classnames is {FORMS}")
  return _checked(name, found)


def of_data(data) -> list[str]:
  """The class names of a config's `data` fields (`classnames`, "tfds" reading `dataset` in `data_dir`)."""
  return get(data.classnames, data.dataset, data.data_dir or None)


def _dataset_names(dataset: str, data_dir: Optional[str]) -> list[str]:
  # Imported here: the pipeline pulls in TensorFlow, which the registered lists do not need.
  from flyp_jax.data import pipeline
  builder = pipeline.get_builder(dataset, data_dir)
  label = pipeline.label_feature(builder)
  if not getattr(label, "names", None) or label.names == [str(i) for i in range(label.num_classes)]:
    raise errors.BadValue(
        f"TFDS dataset {builder.name!r} has no class names in its 'label' feature, so data.classnames={FROM_DATASET!r} "
        f"cannot name its classes; give them as a text file (one name per line, in label order) or a "
        f"comma-separated list")
  return list(label.names)


def _checked(name: str, found: list[str]) -> list[str]:
  repeated = sorted({n for n in found if found.count(n) > 1})
  if not found or not all(found):
    raise errors.BadValue(f"data.classnames={name!r} gives an empty class name; {FORMS}")
  if repeated:
    raise errors.BadValue(f"data.classnames={name!r} names {repeated} more than once: each label needs its own name")
  return found
