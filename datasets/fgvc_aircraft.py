"""FGVCAircraft: 100 aircraft variants; the official ``images_variant_*.txt`` lists are read every
time (no split JSON). ``fgvc_aircraft`` is the ``data/`` folder of fgvc-aircraft-2013b."""
import os

from dassl.data.datasets import DATASET_REGISTRY
from dassl.utils import UserError

from .coop_reader import CoOpReader
from .layout import doc_hint, read_lines
from .split_files import build_items


@DATASET_REGISTRY.register()
class FGVCAircraft(CoOpReader):
    dataset_dir = "fgvc_aircraft"
    image_subdir = "images"

    def build_split(self):
        variants_file = os.path.join(self.dataset_dir, "variants.txt")
        classnames = [line.strip() for line in read_lines(variants_file, "variant list", self.name)]
        label_of = {name: label for label, name in enumerate(classnames)}
        return tuple(self._read_list(f"images_variant_{part}.txt", label_of) for part in ("train", "val", "test"))

    def _read_list(self, filename: str, label_of: dict):
        """Lines ``<image id> <variant name, may contain spaces>``."""
        path = os.path.join(self.dataset_dir, filename)
        records = []
        for line in read_lines(path, "image list", self.name):
            image_id, _, classname = line.strip().partition(" ")
            if classname not in label_of:
                raise UserError(f"{self.name}: {path} lists variant {classname!r}, which is not in variants.txt. "
                                + doc_hint(self.name))
            records.append((os.path.join(self.image_dir, image_id + ".jpg"), label_of[classname], classname))
        return build_items(records, path, self.name)
