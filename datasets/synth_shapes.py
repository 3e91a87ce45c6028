"""SynthShapes: the CPU-sized synthetic benchmark (40 colour x shape classes, 32x32 images).

Written by `python -m benchmarks.synthshapes.dataset_writer <root>` in the CoOp layout:
``<root>/synth_shapes_<variant>/images/<class_folder>/*.png`` + ``split_zhou_SynthShapes.json``.
One registered reader per variant, so each variant has its own ``DATASET.NAME`` (and its own rows
in the result tables): ``SynthShapes`` (clean images), ``SynthShapesNoisy`` (very low contrast,
pixel noise) and ``SynthShapesTextured`` (textured backgrounds). Class names read naturally in a
prompt ("red triangle"); the template is "a photo of a {}.".
"""
from dassl.data.datasets import DATASET_REGISTRY
from dassl.utils import UserError

from .coop_reader import CoOpReader
from .templates import register_template

TEMPLATE = "a photo of a {}."


@DATASET_REGISTRY.register()
class SynthShapes(CoOpReader):
    """The clean variant (no downstream shift); the other variants only change the folder."""
    dataset_dir = "synth_shapes_clean"
    image_subdir = "images"
    split_file = "split_zhou_SynthShapes.json"
    variant = "clean"

    def build_split(self):
        raise UserError(
            f"{self.name}: no split file at {self.split_path}. SynthShapes is rendered, not downloaded: "
            f"run `python -m benchmarks.synthshapes.dataset_writer <DATASET.ROOT> --variants {self.variant}` "
            "(or `bash scripts/synth_benchmark.sh`, which does it for you).")


@DATASET_REGISTRY.register()
class SynthShapesNoisy(SynthShapes):
    dataset_dir = "synth_shapes_noisy"
    variant = "noisy"


@DATASET_REGISTRY.register()
class SynthShapesTextured(SynthShapes):
    dataset_dir = "synth_shapes_textured"
    variant = "textured"


for _name in ("SynthShapes", "SynthShapesNoisy", "SynthShapesTextured"):
    register_template(_name, TEMPLATE)
