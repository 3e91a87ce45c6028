"""UCF101: the middle frame of every video in ``ucf101/UCF-101-midframes`` + split JSON."""
import os
import re

from dassl.data.datasets import DATASET_REGISTRY
from dassl.utils import UserError

from .coop_reader import CoOpReader
from .layout import doc_hint, read_lines
from .split_files import build_items


def action_folder(action: str) -> str:
    """``ApplyEyeMakeup`` -> ``Apply_Eye_Makeup``, ``YoYo`` -> ``Yo_Yo`` (midframe folder = class name)."""
    return "_".join(re.findall("[A-Z][^A-Z]*", action))


@DATASET_REGISTRY.register()
class UCF101(CoOpReader):
    dataset_dir = "ucf101"
    image_subdir = "UCF-101-midframes"
    split_file = "split_zhou_UCF101.json"

    def build_split(self):
        list_dir = os.path.join(self.dataset_dir, "ucfTrainTestlist")
        label_of = {}
        for line in read_lines(os.path.join(list_dir, "classInd.txt"), "class list", self.name):
            class_id, action = line.split()[:2]
            label_of[action] = int(class_id) - 1
        trainval = self._read_list(os.path.join(list_dir, "trainlist01.txt"), label_of)
        test = self._read_list(os.path.join(list_dir, "testlist01.txt"), label_of)
        train, val = self.split_trainval(trainval, p_val=0.2)
        return train, val, test

    def _read_list(self, path: str, label_of: dict):
        """Lines ``Action/v_Action_gXX_cYY.avi [label]`` -> the matching midframe ``.jpg``."""
        records = []
        for line in read_lines(path, "video list", self.name):
            action, video = line.split()[0].split("/")
            if action not in label_of:
                raise UserError(f"{self.name}: {path} lists action {action!r}, which is not in classInd.txt. "
                                + doc_hint(self.name))
            folder = action_folder(action)
            image = os.path.join(self.image_dir, folder, video.replace(".avi", ".jpg"))
            records.append((image, label_of[action], folder))
        return build_items(records, path, self.name)
