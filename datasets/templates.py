"""Text prompt templates used to build zero-shot / initial classifiers.

``CUSTOM_TEMPLATES`` maps ``DATASET.NAME`` to the single hand-written template the
CoOp family uses; ``{}`` is filled with ``classname.replace("_", " ")``.
Later datasets (e.g. a synthetic one) add their entry with :func:`register_template`.
"""
from __future__ import annotations

from typing import Dict, List

CUSTOM_TEMPLATES: Dict[str, str] = {
    "OxfordPets": "a photo of a {}, a type of pet.",
    "OxfordFlowers": "a photo of a {}, a type of flower.",
    "FGVCAircraft": "a photo of a {}, a type of aircraft.",
    "DescribableTextures": "{} texture.",
    "EuroSAT": "a centered satellite photo of {}.",
    "StanfordCars": "a photo of a {}.",
    "Food101": "a photo of {}, a type of food.",
    "SUN397": "a photo of a {}.",
    "Caltech101": "a photo of a {}.",
    "UCF101": "a photo of a person doing {}.",
    "ImageNet": "a photo of a {}.",
    "ImageNetSketch": "a photo of a {}.",
    "ImageNetV2": "a photo of a {}.",
    "ImageNetA": "a photo of a {}.",
    "ImageNetR": "a photo of a {}.",
}


def register_template(dataset_name: str, template: str) -> None:
    """Add (or replace) the custom template of a dataset; the template must contain ``{}``."""
    if "{}" not in template:
        raise ValueError(f"Template for {dataset_name!r} must contain '{{}}', got {template!r}")
    CUSTOM_TEMPLATES[dataset_name] = template


def get_template(dataset_name: str) -> str:
    """Return the custom template for ``DATASET.NAME``; unknown names raise a KeyError listing the known ones."""
    try:
        return CUSTOM_TEMPLATES[dataset_name]
    except KeyError:
        known = ", ".join(sorted(CUSTOM_TEMPLATES))
        raise KeyError(
            f"No prompt template for dataset {dataset_name!r}. Known datasets: {known}. "
            "Add one with datasets.templates.register_template(name, template)."
        ) from None


def fill_template(template: str, classname: str) -> str:
    """Format a template with a class name, underscores turned into spaces (as all trainers do)."""
    return template.format(classname.replace("_", " "))


# The 7 templates of CoOp's ZeroshotCLIP2 ensemble.
IMAGENET_TEMPLATES_SELECT: List[str] = [
    "itap of a {}.",
    "a bad photo of the {}.",
    "a origami {}.",
    "a photo of the large {}.",
    "a {} in a video game.",
    "art of the {}.",
    "a photo of the small {}.",
]

# PromptSRC / PromptKD's 60-entry ensemble: "a photo of a {}." first, then CLIP's 80 ImageNet
# templates 0-59 without index 39, in their original order.
IMAGENET_TEMPLATES: List[str] = [
    "a photo of a {}.",
    "a bad photo of a {}.",
    "a photo of many {}.",
    "a sculpture of a {}.",
    "a photo of the hard to see {}.",
    "a low resolution photo of the {}.",
    "a rendering of a {}.",
    "graffiti of a {}.",
    "a bad photo of the {}.",
    "a cropped photo of the {}.",
    "a tattoo of a {}.",
    "the embroidered {}.",
    "a photo of a hard to see {}.",
    "a bright photo of a {}.",
    "a photo of a clean {}.",
    "a photo of a dirty {}.",
    "a dark photo of the {}.",
    "a drawing of a {}.",
    "a photo of my {}.",
    "the plastic {}.",
    "a photo of the cool {}.",
    "a close-up photo of a {}.",
    "a black and white photo of the {}.",
    "a painting of the {}.",
    "a painting of a {}.",
    "a pixelated photo of the {}.",
    "a sculpture of the {}.",
    "a bright photo of the {}.",
    "a cropped photo of a {}.",
    "a plastic {}.",
    "a photo of the dirty {}.",
    "a jpeg corrupted photo of a {}.",
    "a blurry photo of the {}.",
    "a photo of the {}.",
    "a good photo of the {}.",
    "a rendering of the {}.",
    "a {} in a video game.",
    "a photo of one {}.",
    "a doodle of a {}.",
    "a close-up photo of the {}.",
    "the origami {}.",
    "the {} in a video game.",
    "a sketch of a {}.",
    "a doodle of the {}.",
    "a origami {}.",
    "a low resolution photo of a {}.",
    "the toy {}.",
    "a rendition of the {}.",
    "a photo of the clean {}.",
    "a photo of a large {}.",
    "a rendition of a {}.",
    "a photo of a nice {}.",
    "a photo of a weird {}.",
    "a blurry photo of a {}.",
    "a cartoon {}.",
    "art of a {}.",
    "a sketch of the {}.",
    "a embroidered {}.",
    "a pixelated photo of a {}.",
    "itap of the {}.",
]
