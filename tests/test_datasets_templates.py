"""Prompt templates: exact strings, lookup by DATASET.NAME, ensembles."""
import pytest

import datasets
from datasets.templates import (CUSTOM_TEMPLATES, IMAGENET_TEMPLATES, IMAGENET_TEMPLATES_SELECT, fill_template,
                                get_template, register_template)


def test_every_dataset_has_a_template():
    assert set(datasets.DATASET_KEYS) <= set(CUSTOM_TEMPLATES)
    assert all("{}" in t for t in CUSTOM_TEMPLATES.values())


def test_exact_strings():
    assert get_template("OxfordPets") == "a photo of a {}, a type of pet."
    assert get_template("DescribableTextures") == "{} texture."
    assert get_template("EuroSAT") == "a centered satellite photo of {}."
    assert get_template("Food101") == "a photo of {}, a type of food."
    assert get_template("UCF101") == "a photo of a person doing {}."
    assert fill_template(get_template("UCF101"), "Apply_Eye_Makeup") == "a photo of a person doing Apply Eye Makeup."


def test_unknown_dataset_names_the_known_ones():
    with pytest.raises(KeyError, match="No prompt template for dataset 'Nope'.*OxfordPets"):
        get_template("Nope")


def test_register_template_for_a_new_dataset():
    register_template("FakeShapesForTest", "a drawing of a {}.")
    try:
        assert get_template("FakeShapesForTest") == "a drawing of a {}."
        with pytest.raises(ValueError):
            register_template("Broken", "no placeholder")
    finally:
        CUSTOM_TEMPLATES.pop("FakeShapesForTest")


def test_ensembles():
    assert len(IMAGENET_TEMPLATES_SELECT) == 7 and IMAGENET_TEMPLATES_SELECT[0] == "itap of a {}."
    assert len(IMAGENET_TEMPLATES) == 60 == len(set(IMAGENET_TEMPLATES))
    assert IMAGENET_TEMPLATES[0] == "a photo of a {}." and IMAGENET_TEMPLATES[-1] == "itap of the {}."
    assert IMAGENET_TEMPLATES[1] == "a bad photo of a {}."
