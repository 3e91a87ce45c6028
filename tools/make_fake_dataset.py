"""Write a tiny dataset in the exact on-disk layout one of our readers expects (CoOp layout).

Used by the tests, the demo and by users who want to see what a correct folder looks like.
Every dataset gets small solid-colour JPEGs, its split JSON and the raw annotation files that
the reader's fallback needs (OxfordPets annotations, SUN397 partitions, UCF101 lists, FGVCAircraft
variant lists, OxfordFlowers / StanfordCars ``.mat`` files when SciPy is installed), with the real
class count and real-looking class names unless ``num_classes`` says otherwise.

    python tools/make_fake_dataset.py OxfordPets --root /tmp/data
    python tools/make_fake_dataset.py all --root /tmp/data --num-classes 4
"""
from __future__ import annotations

import argparse
import io
import json
import random
import sys
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

SPLITS = ("train", "val", "test")

# Registered name -> (config key, dataset folder under the root, real number of classes).
# Kept free of torch imports so the CLI starts fast; tests check it against datasets.DATASET_KEYS.
LAYOUTS: Dict[str, Tuple[str, str, int]] = {
    "ImageNet": ("imagenet", "imagenet", 1000),
    "Caltech101": ("caltech101", "caltech-101", 100),
    "OxfordPets": ("oxford_pets", "oxford_pets", 37),
    "StanfordCars": ("stanford_cars", "stanford_cars", 196),
    "OxfordFlowers": ("oxford_flowers", "oxford_flowers", 102),
    "Food101": ("food101", "food-101", 101),
    "FGVCAircraft": ("fgvc_aircraft", "fgvc_aircraft", 100),
    "SUN397": ("sun397", "sun397", 397),
    "DescribableTextures": ("dtd", "dtd", 47),
    "EuroSAT": ("eurosat", "eurosat", 10),
    "UCF101": ("ucf101", "ucf101", 101),
    "ImageNetV2": ("imagenetv2", "imagenetv2", 1000),
    "ImageNetSketch": ("imagenet_sketch", "imagenet-sketch", 1000),
    "ImageNetA": ("imagenet_a", "imagenet-adversarial", 200),
    "ImageNetR": ("imagenet_r", "imagenet-rendition", 200),
}

# ----------------------------------------------------------------------------- class names
ADJECTIVES = ("striped", "wooden", "golden", "tiny", "rocky", "frozen", "green", "silver", "dusty",
              "bright", "quiet", "wild", "round", "sandy", "paper", "iron", "lunar", "coral", "misty",
              "velvet", "spotted", "crimson", "hollow", "woolly", "glass")
NOUNS = ("cat", "hill", "bridge", "tower", "river", "bird", "lamp", "field", "garden", "boat", "road",
         "stone", "forest", "cave", "market", "cloud", "train", "harbor", "valley", "castle", "beetle",
         "kettle", "violin", "canyon", "meadow", "lantern", "falcon", "orchard", "pier", "quarry", "dune",
         "glacier", "temple", "barn", "lighthouse", "island", "fountain", "chapel", "windmill", "reef")
PET_BREEDS = ("Abyssinian", "american_bulldog", "american_pit_bull_terrier", "basset_hound", "beagle",
              "Bengal", "Birman", "Bombay", "boxer", "British_Shorthair", "chihuahua", "Egyptian_Mau",
              "english_cocker_spaniel", "english_setter", "german_shorthaired", "great_pyrenees", "havanese",
              "japanese_chin", "keeshond", "leonberger", "Maine_Coon", "miniature_pinscher", "newfoundland",
              "Persian", "pomeranian", "pug", "Ragdoll", "Russian_Blue", "saint_bernard", "samoyed",
              "scottish_terrier", "shiba_inu", "Siamese", "Sphynx", "staffordshire_bull_terrier",
              "wheaten_terrier", "yorkshire_terrier")
EUROSAT_FOLDERS = ("AnnualCrop", "Forest", "HerbaceousVegetation", "Highway", "Industrial", "Pasture",
                   "PermanentCrop", "Residential", "River", "SeaLake")
CALTECH_SPECIAL = ("Faces", "Leopards", "Motorbikes", "airplanes")
UCF_VERBS = ("Apply", "Band", "Blow", "Brush", "Jump", "Play", "Ride", "Throw", "Walk", "Pull", "Yo")
UCF_OBJECTS = ("EyeMakeup", "Marching", "DryHair", "Teeth", "Rope", "Cello", "Bike", "Discus", "Dog",
               "Ups", "Yo")
AIRCRAFT_PREFIXES = ("A3", "737-", "DC-", "CRJ-", "EMB-", "F/A-", "Tu-", "Yak-", "Cessna ", "Falcon ")
CAR_MAKES = ("AM General", "Acura", "Aston Martin", "Audi", "BMW", "Bentley", "Buick", "Chevrolet",
             "Dodge", "Ford", "Honda", "Hyundai", "Jeep", "Nissan")
CAR_TYPES = ("SUV", "Sedan", "Coupe", "Convertible", "Hatchback", "Wagon", "Minivan")


def word_names(count: int, sep: str = "_") -> List[str]:
    """`count` unique names such as ``striped_cat`` (a numeric suffix beyond 1000)."""
    names = []
    for i in range(count):
        name = f"{ADJECTIVES[i % len(ADJECTIVES)]}{sep}{NOUNS[(i // len(ADJECTIVES)) % len(NOUNS)]}"
        block = i // (len(ADJECTIVES) * len(NOUNS))
        names.append(name if block == 0 else f"{name}{sep}{block + 1}")
    return names


def camel(name: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in name.split("_"))


def extend(real: Sequence[str], count: int, make_extra: Callable[[int], List[str]]) -> List[str]:
    """The first `count` real names, padded with generated ones when more are asked for."""
    names = list(real[:count])
    extras = [n for n in make_extra(count + len(real)) if n not in names]
    return names + extras[: count - len(names)]


def imagenet_names(count: int) -> List[str]:
    """CLIP-style ImageNet names, with the real duplicates (missile, sunglasses) at their indices."""
    names = word_names(count, sep=" ")
    for index, name in ((657, "missile"), (744, "missile"), (836, "sunglasses"), (837, "sunglasses")):
        if index < count:
            names[index] = name
    return names


def wnids(count: int) -> List[str]:
    return [f"n{1440764 + 1000 * i:08d}" for i in range(count)]


# ----------------------------------------------------------------------------- writer
class FakeWriter:
    """Writes files under one dataset folder; JPEGs are pre-encoded per colour and copied."""

    def __init__(self, dataset_dir: Path, counts: Dict[str, int], image_size: int, seed: int):
        self.dir = dataset_dir
        self.counts = counts
        self.image_size = image_size
        self.rng = random.Random(seed)
        self._jpegs: Dict[int, bytes] = {}

    def jpeg(self, rel: str, label: int) -> str:
        colour = label % 64
        if colour not in self._jpegs:
            from PIL import Image

            rgb = ((colour * 37) % 256, (colour * 91 + 40) % 256, (colour * 53 + 90) % 256)
            buffer = io.BytesIO()
            Image.new("RGB", (self.image_size, self.image_size), rgb).save(buffer, format="JPEG", quality=90)
            self._jpegs[colour] = buffer.getvalue()
        path = self.dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(self._jpegs[colour])
        return rel

    def text(self, rel: str, lines: Sequence[str]) -> None:
        path = self.dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")

    def json(self, rel: str, obj) -> None:
        path = self.dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(obj, indent=4, separators=(",", ": ")), encoding="utf-8")

    def split_json(self, rel: str, split: Dict[str, list]) -> None:
        self.json(rel, {key: split[key] for key in SPLITS})

    def mat(self, rel: str, content: dict) -> bool:
        """Write a MATLAB file if SciPy is available (only the fallback readers need it)."""
        try:
            from scipy.io import savemat
        except ImportError:
            return False
        path = self.dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        savemat(str(path), content)
        return True

    def per_split(self):
        """Yield ``(split, index_within_class)`` for the configured images per class."""
        for split in SPLITS:
            for k in range(self.counts[split]):
                yield split, k


def write_folder_dataset(w: FakeWriter, image_subdir: str, split_file: str, folders: List[str],
                         classnames: Dict[str, str], file_name: Callable[[str, int], str]) -> None:
    """Class-per-folder datasets (Caltech101, DTD, EuroSAT, Food101): labels = sorted folders."""
    split = {key: [] for key in SPLITS}
    for label, folder in enumerate(sorted(folders)):
        for index, (part, _) in enumerate(w.per_split()):
            rel = w.jpeg(f"{image_subdir}/{folder}/{file_name(folder, index + 1)}", label)
            split[part].append([rel[len(image_subdir) + 1:], label, classnames.get(folder, folder)])
    w.split_json(split_file, split)


def write_caltech101(w: FakeWriter, n: int) -> None:
    folders = extend(CALTECH_SPECIAL, n, word_names)
    renames = {"airplanes": "airplane", "Faces": "face", "Leopards": "leopard", "Motorbikes": "motorbike"}
    write_folder_dataset(w, "101_ObjectCategories", "split_zhou_Caltech101.json", folders, renames,
                         lambda folder, k: f"image_{k:04d}.jpg")
    for ignored in ("BACKGROUND_Google", "Faces_easy"):  # present in the real archive, skipped by the reader
        w.jpeg(f"101_ObjectCategories/{ignored}/image_0001.jpg", 0)


def write_dtd(w: FakeWriter, n: int) -> None:
    write_folder_dataset(w, "images", "split_zhou_DescribableTextures.json", word_names(n), {},
                         lambda folder, k: f"{folder}_{k:04d}.jpg")
    w.text("labels/train1.txt", [])
    (w.dir / "imdb").mkdir(exist_ok=True)


def write_eurosat(w: FakeWriter, n: int) -> None:
    folders = extend(EUROSAT_FOLDERS, n, lambda m: [camel(x) for x in word_names(m)])
    renames = {"AnnualCrop": "Annual Crop Land", "Forest": "Forest",
               "HerbaceousVegetation": "Herbaceous Vegetation Land", "Highway": "Highway or Road",
               "Industrial": "Industrial Buildings", "Pasture": "Pasture Land",
               "PermanentCrop": "Permanent Crop Land", "Residential": "Residential Buildings",
               "River": "River", "SeaLake": "Sea or Lake"}
    write_folder_dataset(w, "2750", "split_zhou_EuroSAT.json", folders, renames,
                         lambda folder, k: f"{folder}_{k}.jpg")


def write_food101(w: FakeWriter, n: int) -> None:
    names = word_names(n)
    write_folder_dataset(w, "images", "split_zhou_Food101.json", names, {}, lambda folder, k: f"{1000 + k}.jpg")
    w.text("meta/classes.txt", sorted(names))


def write_oxford_pets(w: FakeWriter, n: int) -> None:
    breeds = extend(PET_BREEDS, n, lambda m: [f"extra_breed_{i}" for i in range(m)])
    split = {key: [] for key in SPLITS}
    annotations = {"trainval": [], "test": []}
    for label, breed in enumerate(breeds):
        species = 1 if breed[0].isupper() else 2  # cats have capitalised names
        for index, (part, _) in enumerate(w.per_split()):
            stem = f"{breed}_{index + 1}"
            w.jpeg(f"images/{stem}.jpg", label)
            split[part].append([f"{stem}.jpg", label, breed.lower()])
            annotations["test" if part == "test" else "trainval"].append(f"{stem} {label + 1} {species} {label + 1}")
    w.split_json("split_zhou_OxfordPets.json", split)
    w.text("annotations/trainval.txt", annotations["trainval"])
    w.text("annotations/test.txt", annotations["test"])


def write_oxford_flowers(w: FakeWriter, n: int) -> None:
    names = word_names(n, sep=" ")
    split = {key: [] for key in SPLITS}
    labels = []
    for label in range(n):
        for part, _ in w.per_split():
            labels.append(label + 1)
            rel = w.jpeg(f"jpg/image_{len(labels):05d}.jpg", label)
            split[part].append([rel[len("jpg/"):], label, names[label]])
    w.split_json("split_zhou_OxfordFlowers.json", split)
    w.json("cat_to_name.json", {str(i + 1): name for i, name in enumerate(names)})
    import numpy as np

    w.mat("imagelabels.mat", {"labels": np.array([labels], dtype=np.uint16)})


def write_stanford_cars(w: FakeWriter, n: int) -> None:
    import numpy as np

    meta_names = [f"{CAR_MAKES[i % len(CAR_MAKES)]} Model{i // len(CAR_MAKES) + 1} "
                  f"{CAR_TYPES[i % len(CAR_TYPES)]} {1998 + i % 15}" for i in range(n)]
    split = {key: [] for key in SPLITS}
    annos = {"cars_train": [], "cars_test": []}
    for label, meta_name in enumerate(meta_names):
        words = meta_name.split(" ")
        classname = " ".join([words[-1]] + words[:-1])  # year moved to the front
        for part, _ in w.per_split():
            folder = "cars_test" if part == "test" else "cars_train"
            fname = f"{len(annos[folder]) + 1:05d}.jpg"
            annos[folder].append((fname, label + 1))
            split[part].append([w.jpeg(f"{folder}/{fname}", label), label, classname])
    w.split_json("split_zhou_StanfordCars.json", split)

    def struct(records):
        array = np.zeros((1, len(records)), dtype=[("fname", "O"), ("class", "O")])
        for i, (fname, cls) in enumerate(records):
            array[0, i]["fname"] = fname
            array[0, i]["class"] = np.array([[cls]], dtype=np.uint16)
        return array

    class_names = np.empty((1, n), dtype=object)
    class_names[0, :] = meta_names
    w.mat("devkit/cars_meta.mat", {"class_names": class_names})
    w.mat("devkit/cars_train_annos.mat", {"annotations": struct(annos["cars_train"])})
    w.mat("cars_test_annos_withlabels.mat", {"annotations": struct(annos["cars_test"])})


def write_fgvc_aircraft(w: FakeWriter, n: int) -> None:
    variants = [f"{AIRCRAFT_PREFIXES[i % len(AIRCRAFT_PREFIXES)]}{100 + i}" for i in range(n)]
    lists = {key: [] for key in SPLITS}
    image_id = 1034309
    for label, variant in enumerate(variants):
        for part, _ in w.per_split():
            image_id += 1
            w.jpeg(f"images/{image_id:07d}.jpg", label)
            lists[part].append(f"{image_id:07d} {variant}")
    w.text("variants.txt", variants)
    for part in SPLITS:
        w.text(f"images_variant_{part}.txt", lists[part])


def write_sun397(w: FakeWriter, n: int) -> None:
    class_dirs = []
    for i, name in enumerate(word_names(n)):
        sub = ("", "/outdoor", "/indoor")[i % 3]  # some classes have an extra level, as in SUN397
        class_dirs.append(f"{name[0]}/{name}{sub}")
    split = {key: [] for key in SPLITS}
    partitions = {"Training_01.txt": [], "Testing_01.txt": []}
    for label, class_dir in enumerate(class_dirs):
        classname = " ".join(reversed(class_dir.split("/")[1:]))
        for part, _ in w.per_split():
            rel = f"{class_dir}/sun_{w.rng.getrandbits(64):016x}.jpg"
            w.jpeg(f"SUN397/{rel}", label)
            split[part].append([rel, label, classname])
            partitions["Testing_01.txt" if part == "test" else "Training_01.txt"].append("/" + rel)
    w.split_json("split_zhou_SUN397.json", split)
    w.text("ClassName.txt", ["/" + d for d in class_dirs])
    for filename, lines in partitions.items():
        w.text(filename, lines)


def write_ucf101(w: FakeWriter, n: int) -> None:
    actions = [UCF_VERBS[i % len(UCF_VERBS)] + UCF_OBJECTS[(i // len(UCF_VERBS)) % len(UCF_OBJECTS)]
               + ("" if i < len(UCF_VERBS) * len(UCF_OBJECTS) else f"Extra{chr(65 + i % 26)}") for i in range(n)]
    split = {key: [] for key in SPLITS}
    lists = {"trainlist01.txt": [], "testlist01.txt": []}
    for label, action in enumerate(actions):
        folder = "_".join(_capital_pieces(action))
        for group, (part, _) in enumerate(w.per_split()):
            video = f"v_{action}_g{group + 1:02d}_c01"
            w.jpeg(f"UCF-101-midframes/{folder}/{video}.jpg", label)
            split[part].append([f"{folder}/{video}.jpg", label, folder])
            if part == "test":
                lists["testlist01.txt"].append(f"{action}/{video}.avi")
            else:
                lists["trainlist01.txt"].append(f"{action}/{video}.avi {label + 1}")
    w.split_json("split_zhou_UCF101.json", split)
    w.text("ucfTrainTestlist/classInd.txt", [f"{i + 1} {a}" for i, a in enumerate(actions)])
    for filename, lines in lists.items():
        w.text(f"ucfTrainTestlist/{filename}", lines)


def _capital_pieces(action: str) -> List[str]:
    pieces: List[str] = []
    for ch in action:
        if ch.isupper() or not pieces:
            pieces.append(ch)
        else:
            pieces[-1] += ch
    return pieces


def write_imagenet(w: FakeWriter, n: int) -> None:
    ids, names = wnids(n), imagenet_names(n)
    w.text("classnames.txt", [f"{wnid} {name}" for wnid, name in zip(ids, names)])
    val_index = 0
    for label, wnid in enumerate(ids):
        for k in range(w.counts["train"]):
            w.jpeg(f"images/train/{wnid}/{wnid}_{k + 1}.JPEG", label)
        for _ in range(w.counts["test"]):
            val_index += 1
            w.jpeg(f"images/val/{wnid}/ILSVRC2012_val_{val_index:08d}.JPEG", label)


def _variant_writer(image_subdir: str, stride: int, numeric_folders: bool = False, readme: bool = False):
    """ImageNet variants: a full classnames.txt plus test images in wnid (or index) folders."""

    def write(w: FakeWriter, n: int) -> None:
        total = n * stride
        ids, names = wnids(total), imagenet_names(total)
        w.text("classnames.txt", [f"{wnid} {name}" for wnid, name in zip(ids, names)])
        for label, wnid in enumerate(ids[::stride]):
            folder = str(label) if numeric_folders else wnid
            for k in range(w.counts["test"]):
                w.jpeg(f"{image_subdir}/{folder}/{w.rng.getrandbits(40):010x}_{k}.jpeg", label)
        if readme:
            w.text(f"{image_subdir}/README.txt", ["fake copy for tests"])

    return write


WRITERS: Dict[str, Callable[[FakeWriter, int], None]] = {
    "ImageNet": write_imagenet,
    "Caltech101": write_caltech101,
    "OxfordPets": write_oxford_pets,
    "StanfordCars": write_stanford_cars,
    "OxfordFlowers": write_oxford_flowers,
    "Food101": write_food101,
    "FGVCAircraft": write_fgvc_aircraft,
    "SUN397": write_sun397,
    "DescribableTextures": write_dtd,
    "EuroSAT": write_eurosat,
    "UCF101": write_ucf101,
    "ImageNetV2": _variant_writer("imagenetv2-matched-frequency-format-val", 1, numeric_folders=True),
    "ImageNetSketch": _variant_writer("images", 1),
    "ImageNetA": _variant_writer("imagenet-a", 5, readme=True),
    "ImageNetR": _variant_writer("imagenet-r", 5, readme=True),
}


def resolve_name(name: str) -> str:
    """Registered name (``OxfordPets``) from a registered name or config key (``oxford_pets``)."""
    if name in LAYOUTS:
        return name
    by_key = {layout[0]: reg for reg, layout in LAYOUTS.items()}
    if name in by_key:
        return by_key[name]
    choices = ", ".join(f"{reg} ({layout[0]})" for reg, layout in LAYOUTS.items())
    raise ValueError(f"Unknown dataset {name!r}; choose one of: {choices}")


def make_fake_dataset(name: str, root, *, num_classes: Optional[int] = None, train_per_class: int = 2,
                      val_per_class: int = 1, test_per_class: int = 2, image_size: int = 16,
                      seed: int = 0) -> Path:
    """Write a fake `name` dataset under `root` (the DATASET.ROOT folder); returns the dataset folder.

    `name` is a registered name or a config key. ImageNet uses ``train_per_class`` for
    ``images/train`` and ``test_per_class`` for ``images/val``; the variants use ``test_per_class``.
    """
    registered = resolve_name(name)
    _, folder, real_count = LAYOUTS[registered]
    count = real_count if num_classes is None else int(num_classes)
    if count < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    dataset_dir = Path(root).expanduser().resolve() / folder
    dataset_dir.mkdir(parents=True, exist_ok=True)
    counts = {"train": train_per_class, "val": val_per_class, "test": test_per_class}
    WRITERS[registered](FakeWriter(dataset_dir, counts, image_size, seed), count)
    return dataset_dir


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Write a tiny fake dataset in the CoOp on-disk layout.")
    parser.add_argument("name", help="registered name (OxfordPets) or config key (oxford_pets), or 'all'")
    parser.add_argument("--root", required=True, help="folder that plays the role of DATASET.ROOT")
    parser.add_argument("--num-classes", type=int, default=None, help="default: the real class count")
    parser.add_argument("--train-per-class", type=int, default=2)
    parser.add_argument("--val-per-class", type=int, default=1)
    parser.add_argument("--test-per-class", type=int, default=2)
    parser.add_argument("--image-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    names = list(LAYOUTS) if args.name == "all" else [args.name]
    for name in names:
        try:
            path = make_fake_dataset(name, args.root, num_classes=args.num_classes,
                                     train_per_class=args.train_per_class, val_per_class=args.val_per_class,
                                     test_per_class=args.test_per_class, image_size=args.image_size,
                                     seed=args.seed)
        except ValueError as exc:
            print(f"Error: {exc}", file=sys.stderr)
            return 2
        print(f"Wrote fake {resolve_name(name)} to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
