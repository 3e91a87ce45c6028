"""SUN397: 397 scene classes; ``sun397/SUN397`` + the Partitions text files + split JSON."""
import os

from dassl.data.datasets import DATASET_REGISTRY
from dassl.utils import UserError

from .coop_reader import CoOpReader
from .layout import doc_hint, read_lines
from .split_files import build_items


def scene_classname(class_dir: str) -> str:
    """``a/apartment_building/outdoor`` -> ``outdoor apartment_building`` (drop the letter folder,
    reverse the rest, join with spaces), as CoOp names SUN397 classes."""
    return " ".join(reversed(class_dir.split("/")[1:]))


@DATASET_REGISTRY.register()
class SUN397(CoOpReader):
    dataset_dir = "sun397"
    image_subdir = "SUN397"
    split_file = "split_zhou_SUN397.json"

    def build_split(self):
        class_file = os.path.join(self.dataset_dir, "ClassName.txt")
        class_dirs = [line.strip().lstrip("/") for line in read_lines(class_file, "class list", self.name)]
        label_of = {class_dir: label for label, class_dir in enumerate(class_dirs)}
        trainval = self._read_partition("Training_01.txt", label_of)
        test = self._read_partition("Testing_01.txt", label_of)
        train, val = self.split_trainval(trainval, p_val=0.2)
        return train, val, test

    def _read_partition(self, filename: str, label_of: dict):
        path = os.path.join(self.dataset_dir, filename)
        records = []
        for line in read_lines(path, "partition file", self.name):
            rel = line.strip()[1:]  # lines start with "/"
            class_dir = os.path.dirname(rel)
            if class_dir not in label_of:
                raise UserError(f"{self.name}: {path} lists {line.strip()!r}, whose class {class_dir!r} "
                                f"is not in ClassName.txt. " + doc_hint(self.name))
            records.append((os.path.join(self.image_dir, rel), label_of[class_dir], scene_classname(class_dir)))
        return build_items(records, path, self.name)
