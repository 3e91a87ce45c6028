"""Config defaults, yacs value semantics, merge order, PromptKD-family YAMLs, and error messages."""
import pytest

from dassl.config import ConfigError, get_cfg_default, merge_opts, merge_sources, merge_yaml
from trainers.config import default_config

COMMON_INPUT = """\
INPUT:
  SIZE: (224, 224)
  INTERPOLATION: "bicubic"
  PIXEL_MEAN: [0.48145466, 0.4578275, 0.40821073]
  PIXEL_STD: [0.26862954, 0.26130258, 0.27577711]
  TRANSFORMS: ["random_resized_crop", "random_flip", "normalize"]
"""


def _optim(lr, epochs):
    return f"""\
OPTIM:
  NAME: "sgd"
  LR: {lr}
  MAX_EPOCH: {epochs}
  LR_SCHEDULER: "cosine"
  WARMUP_EPOCH: 1
  WARMUP_TYPE: "constant"
  WARMUP_CONS_LR: 1e-5
"""


def _loader(train_bs, test_bs=100):
    return f"""\
DATALOADER:
  TRAIN_X:
    BATCH_SIZE: {train_bs}
  TEST:
    BATCH_SIZE: {test_bs}
  NUM_WORKERS: 8
"""


def _vit_yaml(train_bs, lr, epochs, trainer_block, backbone="ViT-B/16", print_freq=20, test_block=""):
    return (
        _loader(train_bs) + COMMON_INPUT + _optim(lr, epochs)
        + f"TRAIN:\n  PRINT_FREQ: {print_freq}\n"
        + f'MODEL:\n  BACKBONE:\n    NAME: "{backbone}"\n'
        + test_block + trainer_block
    )


BEST_VAL = 'TEST:\n  FINAL_MODEL: "best_val"\n  NO_TEST: False\n'


def _promptkd(depth):
    return f"""\
TRAINER:
  PROMPTKD:
    N_CTX_VISION: 4
    N_CTX_TEXT: 4
    CTX_INIT: "a photo of a"
    PREC: "fp16"
    PROMPT_DEPTH_VISION: {depth}
    PROMPT_DEPTH_TEXT: {depth}
    TEACHER_NAME: "ViT-L/14"
    PROJECT_LAYER: 2
    CE_WEIGHT: 0.0
    KD_WEIGHT: 1.0
"""


def _promptsrc(depth, gpa_mean, gpa_std):
    return f"""\
TRAINER:
  PROMPTSRC:
    N_CTX_VISION: 4
    N_CTX_TEXT: 4
    CTX_INIT: "a photo of a"
    PREC: "fp16"
    PROMPT_DEPTH_VISION: {depth}
    PROMPT_DEPTH_TEXT: {depth}
    TEXT_LOSS_WEIGHT: 25
    IMAGE_LOSS_WEIGHT: 10
    GPA_MEAN: {gpa_mean}
    GPA_STD: {gpa_std}
"""


def _maple(depth):
    return f'TRAINER:\n  MAPLE:\n    N_CTX: 2\n    CTX_INIT: "a photo of a"\n    PREC: "fp16"\n    PROMPT_DEPTH: {depth}\n'


IVLP = """\
TRAINER:
  IVLP:
    N_CTX_VISION: 4
    N_CTX_TEXT: 4
    CTX_INIT: "a photo of a"
    PREC: "fp16"
    PROMPT_DEPTH_VISION: 9
    PROMPT_DEPTH_TEXT: 9
"""

# PromptKD's and PromptSRC's method YAMLs (their published values, written in the upstream style).
METHOD_YAMLS = {
    "PromptKD/vit_b16_c2_ep20_batch8_4+4ctx": _vit_yaml(8, 0.005, 20, _promptkd(9), test_block=BEST_VAL),
    "PromptKD/vit_b16_c2_ep20_batch8_4+4ctx_cross_datasets": _vit_yaml(8, 0.005, 20, _promptkd(3), test_block=BEST_VAL),
    "PromptSRC/vit_b16_c2_ep20_batch4_4+4ctx": _vit_yaml(4, 0.0025, 20, _promptsrc(9, 15, 1)),
    "PromptSRC/vit_b16_c2_ep20_batch4_4+4ctx_cross_datasets": _vit_yaml(8, 0.005, 20, _promptsrc(3, 6, 10)),
    "PromptSRC/vit_b16_c2_ep50_batch4_4+4ctx_few_shot": _vit_yaml(8, 0.005, 50, _promptsrc(9, 30, 30), test_block=BEST_VAL),
    "PromptSRC/vit_l14_c2_ep20_batch8_4+4ctx": _vit_yaml(8, 0.005, 20, _promptsrc(9, 15, 1), backbone="ViT-L/14"),
    "IVLP/vit_b16_c2_ep20_batch8_4+4ctx": _vit_yaml(8, 0.005, 20, IVLP),
    "MaPLe/vit_b16_c2_ep20_batch8_2ctx": _vit_yaml(8, 0.005, 20, _maple(9)),
    "MaPLe/vit_b16_c2_ep5_batch4_2ctx": _vit_yaml(4, 0.0035, 5, _maple(9), test_block=BEST_VAL),
    "MaPLe/vit_b16_c2_ep5_batch4_2ctx_cross_datasets": _vit_yaml(4, 0.0026, 2, _maple(3)),
    "CoOp/vit_b16_ep50_ctxv1": _vit_yaml(32, 0.002, 50, 'TRAINER:\n  COOP:\n    CTX_INIT: "a photo of a"\n', print_freq=5),
    "CoOp/rn50": _vit_yaml(32, 0.002, 200, "", backbone="RN50", print_freq=5),
    "CoOp/rn50_val": _loader(200, 200) + COMMON_INPUT + 'MODEL:\n  BACKBONE:\n    NAME: "RN50"\n',
    "CoCoOp/vit_b16_c4_ep10_batch1_ctxv1": _vit_yaml(
        1, 0.002, 10, 'TRAINER:\n  COCOOP:\n    N_CTX: 4\n    CTX_INIT: "a photo of a"\n    PREC: "fp16"\n'
    ),
}

DATASET_NAMES = {
    "caltech101": "Caltech101", "dtd": "DescribableTextures", "eurosat": "EuroSAT",
    "fgvc_aircraft": "FGVCAircraft", "food101": "Food101", "imagenet": "ImageNet",
    "imagenet_a": "ImageNetA", "imagenet_r": "ImageNetR", "imagenet_sketch": "ImageNetSketch",
    "imagenetv2": "ImageNetV2", "oxford_flowers": "OxfordFlowers", "oxford_pets": "OxfordPets",
    "stanford_cars": "StanfordCars", "sun397": "SUN397", "ucf101": "UCF101",
}


def _write(tmp_path, name, text):
    path = tmp_path / (name.replace("/", "__") + ".yaml")
    path.write_text(text)
    return str(path)


def test_engine_defaults_hold_no_method_keys():
    engine = get_cfg_default()
    assert set(engine.TRAINER) == {"NAME"} and "WEIGHTS" not in engine.MODEL.BACKBONE
    full = default_config()
    assert {"COOP", "COCOOP", "MAPLE", "IVLP", "PROMPTSRC", "PROMPTKD", "RSM", "MODAL"} <= set(full.TRAINER)
    assert full.TRAINER.PROMPTKD.TEACHER_NAME == "ViT-L/14"  # one definition, the valid name


def test_get_cfg_default_returns_independent_clones():
    first = default_config()
    first.OPTIM.LR = 0.5
    first.TRAINER.PROMPTKD.KD_WEIGHT = 7.0
    second = default_config()
    assert second.OPTIM.LR == 0.0003
    assert second.TRAINER.PROMPTKD.KD_WEIGHT == 1.0
    assert second.TRAINER.MODAL == "base2novel"
    assert second.DATASET.SUBSAMPLE_CLASSES == "all"
    assert second.OPTIM.STEPSIZE == (-1,)


def test_str_lists_keys_sorted_with_yacs_formatting():
    text = str(default_config())
    top_level = [line.split(":")[0] for line in text.splitlines() if line and not line.startswith(" ")]
    assert top_level == sorted(top_level)
    assert "  SIZE: (224, 224)" in text
    assert "RESUME: " in text.splitlines()  # an empty string prints as nothing


@pytest.mark.parametrize("name", sorted(METHOD_YAMLS))
@pytest.mark.parametrize("dataset", ["oxford_pets", "imagenet"])
def test_every_promptkd_family_yaml_merges(tmp_path, name, dataset):
    cfg = default_config()
    dataset_yaml = _write(tmp_path, dataset, f"DATASET:\n  NAME: \"{DATASET_NAMES[dataset]}\"\n")
    method_yaml = _write(tmp_path, name, f"# stale comment naming PromptSRC\n{METHOD_YAMLS[name]}")
    merge_sources(cfg, dataset_yaml, method_yaml, opts=["TRAINER.PROMPTKD.KD_WEIGHT", "1000.0"])
    assert cfg.is_frozen()
    assert cfg.DATASET.NAME == DATASET_NAMES[dataset]
    assert cfg.INPUT.TRANSFORMS == ("random_resized_crop", "random_flip", "normalize")  # list -> tuple
    assert isinstance(cfg.INPUT.PIXEL_MEAN, list)  # stays a list
    assert cfg.INPUT.SIZE == (224, 224)
    assert cfg.TRAINER.PROMPTKD.KD_WEIGHT == 1000.0
    if "OPTIM" in METHOD_YAMLS[name]:
        assert cfg.OPTIM.WARMUP_CONS_LR == 1e-5 and isinstance(cfg.OPTIM.WARMUP_CONS_LR, float)


def test_every_dataset_yaml_merges(tmp_path):
    for key, name in DATASET_NAMES.items():
        cfg = default_config()
        merge_yaml(cfg, _write(tmp_path, key, f"DATASET:\n  NAME: \"{name}\"\n"))
        assert cfg.DATASET.NAME == name


def test_promptkd_yaml_values(tmp_path):
    cfg = default_config()
    path = _write(tmp_path, "kd", METHOD_YAMLS["PromptKD/vit_b16_c2_ep20_batch8_4+4ctx_cross_datasets"])
    merge_sources(cfg, None, path)
    assert cfg.TRAINER.PROMPTKD.PROMPT_DEPTH_VISION == 3
    assert cfg.TEST.FINAL_MODEL == "best_val"
    assert cfg.OPTIM.LR == 0.005 and cfg.OPTIM.MAX_EPOCH == 20
    assert cfg.DATALOADER.TRAIN_X.BATCH_SIZE == 8
    assert cfg.MODEL.BACKBONE.NAME == "ViT-B/16"


def test_merge_order_later_sources_win(tmp_path):
    dataset_yaml = _write(tmp_path, "ds", "DATASET:\n  NAME: Pets\n  ROOT: from_dataset\nOPTIM:\n  LR: 0.1\n  MAX_EPOCH: 3\nSEED: 5\n")
    method_yaml = _write(tmp_path, "method", "DATASET:\n  ROOT: from_method\nOPTIM:\n  LR: 0.2\n  MAX_EPOCH: 4\n")
    flags = [("--root", "DATASET.ROOT", "from_flag"), ("--seed", "SEED", 0)]
    cfg = merge_sources(default_config(), dataset_yaml, method_yaml, flags, ["OPTIM.MAX_EPOCH", "9"])
    assert cfg.DATASET.NAME == "Pets"  # only the dataset file sets it
    assert cfg.OPTIM.LR == 0.2  # method file beats dataset file
    assert cfg.DATASET.ROOT == "from_flag"  # flag beats both files
    assert cfg.SEED == 0  # seed 0 is a real value
    assert cfg.OPTIM.MAX_EPOCH == 9  # opts beat everything
    with pytest.raises(Exception):
        cfg.OPTIM.LR = 1.0  # frozen


def test_opts_win_over_flags():
    cfg = merge_sources(default_config(), flag_values=[("--output-dir", "OUTPUT_DIR", "a")], opts=["OUTPUT_DIR", "b"])
    assert cfg.OUTPUT_DIR == "b"


def test_opts_values_use_literal_eval():
    cfg = default_config()
    merge_opts(cfg, ["INPUT.SIZE", "(32, 32)", "DATASET.NUM_SHOTS", "16", "USE_CUDA", "False",
                     "DATASET.SUBSAMPLE_CLASSES", "base", "MODEL.BACKBONE.NAME", "ViT-B/16",
                     "OPTIM.STEPSIZE", "[5, 8]", "OPTIM.WARMUP_CONS_LR", "1e-4"])
    assert cfg.INPUT.SIZE == (32, 32)
    assert cfg.DATASET.NUM_SHOTS == 16
    assert cfg.USE_CUDA is False
    assert cfg.DATASET.SUBSAMPLE_CLASSES == "base"
    assert cfg.MODEL.BACKBONE.NAME == "ViT-B/16"
    assert cfg.OPTIM.STEPSIZE == (5, 8)
    assert cfg.OPTIM.WARMUP_CONS_LR == 1e-4


def test_unknown_key_in_yaml_names_key_and_file(tmp_path):
    path = _write(tmp_path, "bad", "OPTIM:\n  LR: 0.1\n  WARMUP_EPOHC: 1\n")
    with pytest.raises(ConfigError) as info:
        merge_yaml(default_config(), path)
    message = str(info.value)
    assert "OPTIM.WARMUP_EPOHC" in message
    assert path in message
    assert "OPTIM.WARMUP_EPOCH" in message  # suggestion


def test_unknown_key_in_opts_names_source():
    cfg = default_config()
    with pytest.raises(ConfigError) as info:
        cfg.merge_from_list(["TRAINER.PROMPTKD.KD_WEIGTH", "1000.0"])
    assert "TRAINER.PROMPTKD.KD_WEIGTH" in str(info.value)
    assert "command-line opts" in str(info.value)


def test_int_for_float_is_an_error_with_a_fix():
    with pytest.raises(ConfigError) as info:
        merge_opts(default_config(), ["TRAINER.PROMPTKD.KD_WEIGHT", "1000"])
    message = str(info.value)
    assert "TRAINER.PROMPTKD.KD_WEIGHT" in message
    assert "command-line opts" in message
    assert "write 1000.0" in message
    assert isinstance(info.value, ValueError)  # as yacs


def test_wrong_type_in_yaml_names_file(tmp_path):
    path = _write(tmp_path, "bad_type", "OPTIM:\n  MAX_EPOCH: 2.5\n")
    with pytest.raises(ConfigError) as info:
        default_config().merge_from_file(path)
    assert "OPTIM.MAX_EPOCH" in str(info.value) and path in str(info.value)


def test_wrong_type_from_flag_names_flag():
    with pytest.raises(ConfigError) as info:
        merge_sources(default_config(), flag_values=[("--seed", "SEED", "abc")])
    assert "--seed" in str(info.value) and "SEED" in str(info.value)


def test_group_key_given_a_value_and_odd_opts_are_errors(tmp_path):
    with pytest.raises(ConfigError, match="OPTIM"):
        merge_yaml(default_config(), _write(tmp_path, "g", "OPTIM: 3\n"))
    with pytest.raises(ConfigError, match="odd number"):
        merge_opts(default_config(), ["OPTIM.LR"])


def test_missing_config_file_is_named(tmp_path):
    missing = str(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="nope.yaml"):
        merge_sources(default_config(), dataset_yaml=missing)


def test_keys_added_before_merge_are_accepted():
    from yacs.config import CfgNode as CN

    cfg = default_config()
    cfg.TRAINER.RSM = CN()
    cfg.TRAINER.RSM.WEIGHT = 0.1
    merge_opts(cfg, ["TRAINER.RSM.WEIGHT", "0.5"])
    assert cfg.TRAINER.RSM.WEIGHT == 0.5


# ---------------------------------------------------------------- configuration identity
def test_config_hash_is_sha256_of_the_printout_without_run_specific_keys():
    import hashlib

    from dassl.config import RUN_SPECIFIC_KEYS, config_hash

    cfg = get_cfg_default()
    cleared = cfg.clone()
    cleared.SEED = cleared.OUTPUT_DIR = cleared.RESUME = cleared.DATASET.ROOT = None
    cleared.DATASET.FEWSHOT_CACHE_DIR = cleared.VERBOSE = None
    cleared.TRAIN.PRINT_FREQ = cleared.TRAIN.CHECKPOINT_FREQ = None
    cleared.TEST.PER_CLASS_RESULT = cleared.TEST.COMPUTE_CMAT = None
    assert config_hash(cfg) == hashlib.sha256(str(cleared).encode("utf-8")).hexdigest()[:12]
    assert set(RUN_SPECIFIC_KEYS) == {"SEED", "OUTPUT_DIR", "RESUME", "DATASET.ROOT", "DATASET.FEWSHOT_CACHE_DIR",
                                      "VERBOSE", "TRAIN.PRINT_FREQ", "TRAIN.CHECKPOINT_FREQ",
                                      "TEST.PER_CLASS_RESULT", "TEST.COMPUTE_CMAT"}

    moved = cfg.clone()
    moved.SEED, moved.OUTPUT_DIR, moved.RESUME, moved.DATASET.ROOT = 7, "elsewhere", "old_run", "/mnt/data"
    moved.TRAIN.PRINT_FREQ, moved.DATASET.FEWSHOT_CACHE_DIR = 1, "/tmp/shots"
    assert config_hash(moved) == config_hash(cfg)
    moved.OPTIM.LR = 0.5
    assert config_hash(moved) != config_hash(cfg)


def test_config_items_flatten_every_leaf_but_the_run_specific_keys():
    from dassl.config import config_items

    cfg = get_cfg_default()
    cfg.SEED = 3
    items = config_items(cfg)
    assert items["OPTIM.LR"] == repr(cfg.OPTIM.LR) and items["INPUT.SIZE"] == repr(cfg.INPUT.SIZE)
    assert items["DATALOADER.TRAIN_X.BATCH_SIZE"] == repr(cfg.DATALOADER.TRAIN_X.BATCH_SIZE)
    assert not {"SEED", "OUTPUT_DIR", "RESUME", "DATASET.ROOT"} & set(items)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in items.items())


def test_differing_keys_and_their_description():
    from dassl.config import config_items, describe_differences, differing_keys

    a = get_cfg_default()
    b = a.clone()
    b.OPTIM.LR = 1.0
    b.OPTIM.MAX_EPOCH = 3
    assert differing_keys(config_items(a), config_items(b)) == ["OPTIM.LR", "OPTIM.MAX_EPOCH"]
    assert differing_keys({"X": "1"}, {"Y": "1"}) == ["X", "Y"]
    text = describe_differences(config_items(a), config_items(b))
    assert text == f"OPTIM.LR (checkpoint {a.OPTIM.LR!r}, now 1.0), OPTIM.MAX_EPOCH (checkpoint {a.OPTIM.MAX_EPOCH}, now 3)"
    many_saved = {f"K{i}": "0" for i in range(8)}
    many_now = {f"K{i}": "1" for i in range(8)}
    many_now["NEW"] = "2"
    text = describe_differences(many_saved, many_now, limit=5)
    assert text.endswith("and 4 more") and text.count("(checkpoint") == 5
    assert "NEW (checkpoint absent, now 2)" in describe_differences({}, {"NEW": "2"})
