"""Dataset readers; importing this package registers every dataset in DATASET_REGISTRY.

Each reader reads the CoOp on-disk layout (see DATASETS.md); the shared steps live in
`coop_reader.CoOpReader`, prompt templates in `templates`.
"""
from . import (  # noqa: F401  (imported for registration)
    caltech101,
    dtd,
    eurosat,
    fgvc_aircraft,
    food101,
    imagenet,
    imagenet_variants,
    oxford_flowers,
    oxford_pets,
    stanford_cars,
    sun397,
    synth_shapes,
    ucf101,
)
from .templates import CUSTOM_TEMPLATES, IMAGENET_TEMPLATES, IMAGENET_TEMPLATES_SELECT, get_template  # noqa: F401

# Registered name -> config key (configs/datasets/<key>.yaml, first argument of the scripts).
DATASET_KEYS = {
    "ImageNet": "imagenet",
    "Caltech101": "caltech101",
    "OxfordPets": "oxford_pets",
    "StanfordCars": "stanford_cars",
    "OxfordFlowers": "oxford_flowers",
    "Food101": "food101",
    "FGVCAircraft": "fgvc_aircraft",
    "SUN397": "sun397",
    "DescribableTextures": "dtd",
    "EuroSAT": "eurosat",
    "UCF101": "ucf101",
    "ImageNetV2": "imagenetv2",
    "ImageNetSketch": "imagenet_sketch",
    "ImageNetA": "imagenet_a",
    "ImageNetR": "imagenet_r",
    "SynthShapes": "synth_shapes_clean",
    "SynthShapesNoisy": "synth_shapes_noisy",
    "SynthShapesTextured": "synth_shapes_textured",
}
