"""The protocol runs in one place: what each protocol checks, where its runs go, and the exact train.py
arguments of every run.

The shell scripts in scripts/ are thin wrappers over `scripts.launch`, which reads their environment
variables into `Settings`, asks one protocol function here (`base2new_train`, `base2new_test`,
`xd_train`, `fewshot_train`, `xd_test`, `dg_test`, `teacher_train`, `zeroshot`) for a `RunSpec` and
carries it out. The SynthShapes benchmark (benchmarks/synthshapes) asks the same functions and runs the
argument vectors in its own warm worker processes, so both start exactly the same train.py runs.

A trainer is one row of `TRAINERS`: its family (distillation: PromptKD's transductive protocol;
inductive: trained on labelled, or for KDPL unlabelled, shots and scored on base and new in the same
run, as in CoOp) and its default config. A protocol is one row of `PROTOCOLS` per script and family:
its run-folder layout, its defaults and the config options every run passes; a script finds its row
from the trainer's family (`protocol_for`). A new protocol with one train.py run per call is a new row
and a few lines like `xd_train`; the run folders, the checks, the folder suffix (RUN_TAG / EXTRA_OPTS /
NPROC), skip-if-done and the argv come from the shared helpers below.

Nothing here imports torch at import time (only the KD-weight lookup and the zero-shot results writer
load the trainers, when a run needs them), so a mistyped argument is reported at once.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

import yaml

from dassl.run_files import RESULTS_FILENAME, ZEROSHOT_PART_FILENAME

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIGS = REPO_ROOT / "configs"


class ScriptError(Exception):
    """A bad input or state of a protocol run, in one line that names it and the fix.

    `scripts.launch` prints it as ``error: <message>`` and exits 2. Not ``dassl.utils.UserError``:
    importing dassl.utils loads torch, seconds that a script answering a mistyped argument should not spend.
    """


# Dataset key (the stem of configs/datasets/<key>.yaml) -> its folder below the data root (CoOp layout).
# Keys without an entry (e.g. the SynthShapes datasets) get no folder check.
DATASET_FOLDERS = {
    "imagenet": "imagenet",
    "caltech101": "caltech-101",
    "oxford_pets": "oxford_pets",
    "stanford_cars": "stanford_cars",
    "oxford_flowers": "oxford_flowers",
    "food101": "food-101",
    "fgvc_aircraft": "fgvc_aircraft",
    "sun397": "sun397",
    "dtd": "dtd",
    "eurosat": "eurosat",
    "ucf101": "ucf101",
    "imagenetv2": "imagenetv2",
    "imagenet_sketch": "imagenet-sketch",
    "imagenet_a": "imagenet-adversarial",
    "imagenet_r": "imagenet-rendition",
}
BASE2NEW_DATASETS = ("imagenet", "caltech101", "oxford_pets", "stanford_cars", "oxford_flowers", "food101",
                     "fgvc_aircraft", "sun397", "dtd", "eurosat", "ucf101")
CROSS_DATASET_TARGETS = tuple(key for key in BASE2NEW_DATASETS if key != "imagenet")
DG_TARGETS = ("imagenetv2", "imagenet_sketch", "imagenet_a", "imagenet_r")   # domain generalisation
FEWSHOT_SHOTS = ("1", "2", "4", "8", "16")
ALL_SHOTS = ("full", "all")   # SHOTS values meaning the whole train split (DATASET.NUM_SHOTS 0)
RESNET_CONFIG = re.compile(r"^rn\d", re.IGNORECASE)


# ----------------------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class Settings:
    """What the protocol scripts read from the environment (same names, upper case); None: the protocol's
    default. `run_tag` None means unset (the suffix then comes from `extra_opts`); "" means no suffix."""
    data: str = "./data"
    trainer: str | None = None
    shots: str = "16"
    cfg: str | None = None
    kd_weight: str | None = None
    teacher_root: str | None = None
    output_root: str = "output"
    extra_opts: str = ""
    run_tag: str | None = None
    load_epoch: str | None = None
    mode: str = "base2new"
    xd: bool = False
    overwrite: bool = False
    nproc: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read DATA, TRAINER, SHOTS, CFG, KD_WEIGHT, TEACHER_ROOT, OUTPUT_ROOT, EXTRA_OPTS, RUN_TAG,
        LOAD_EPOCH, MODE, XD (=1), OVERWRITE (=1) and NPROC; an empty variable counts as unset, except
        RUN_TAG."""
        env = os.environ if env is None else env

        def get(name: str, default: str | None = None) -> str | None:
            return env.get(name) or default

        return cls(data=get("DATA", "./data"), trainer=get("TRAINER"), shots=get("SHOTS", "16"), cfg=get("CFG"),
                   kd_weight=get("KD_WEIGHT"), teacher_root=get("TEACHER_ROOT"),
                   output_root=get("OUTPUT_ROOT", "output"), extra_opts=get("EXTRA_OPTS", ""),
                   run_tag=env.get("RUN_TAG"), load_epoch=get("LOAD_EPOCH"), mode=get("MODE", "base2new"),
                   xd=env.get("XD") == "1", overwrite=env.get("OVERWRITE") == "1", nproc=get("NPROC"))


# ----------------------------------------------------------------------------------------- the tables
DISTILLATION = "distillation"   # PromptKD's transductive protocol: unlabelled images, a prompt-tuned teacher
INDUCTIVE = "inductive"         # CoOp's protocol: shots of the training classes, base and new scored in one run


# Scripts of a trainer's few-shot CFG: its all-class training and the evaluations of its ImageNet model
FEWSHOT_MODEL_SCRIPTS = ("fewshot_train", "xd_train", "xd_test", "dg_test")


@dataclass(frozen=True)
class Trainer:
    """A trainer the scripts run: its family (which protocol rows it uses) and its default CFG for the
    protocols whose row names none (`fewshot_cfg`, when it differs: for fewshot_train and for the
    evaluations of its ImageNet model, xd_test and dg_test, so that they find that model by default)."""
    name: str
    family: str
    cfg: str = ""
    fewshot_cfg: str = ""

    def default_cfg(self, script: str) -> str:
        return (self.fewshot_cfg if script in FEWSHOT_MODEL_SCRIPTS else "") or self.cfg


TRAINERS: dict[str, Trainer] = {t.name: t for t in (
    Trainer("PromptKD", DISTILLATION),
    Trainer("PromptKD_RSM", DISTILLATION),
    Trainer("Simple", DISTILLATION),
    Trainer("Simple_RSM", DISTILLATION),
    Trainer("CoOp", INDUCTIVE, "vit_b16_ctxv1"),
    Trainer("CoCoOp", INDUCTIVE, "vit_b16_c4_ep10_batch1_ctxv1"),
    Trainer("IVLP", INDUCTIVE, "vit_b16_c2_ep20_batch4_4+4ctx"),
    Trainer("MaPLe", INDUCTIVE, "vit_b16_c2_ep5_batch4_2ctx"),
    Trainer("PromptSRC", INDUCTIVE, "vit_b16_c2_ep20_batch4_4+4ctx", "vit_b16_c2_ep50_batch4_4+4ctx_few_shot"),
    Trainer("KDPL", INDUCTIVE, "vit_b16_ep50_ctxv1"),        # CoOp host, unlabelled
    Trainer("KDPL_RSM", INDUCTIVE, "vit_b16_ep50_ctxv1"),
)}


def trainer_row(name: str) -> Trainer:
    """The TRAINERS row of a TRAINER value; a ScriptError lists the known ones."""
    if name not in TRAINERS:
        raise ScriptError(f"unknown TRAINER '{name}'; the scripts run: {' '.join(TRAINERS)}")
    return TRAINERS[name]


def _promptkd_kd_weight(dataset: str) -> str:
    """PromptKD's per-dataset KD weight (trainers.config), looked up by the dataset's DATASET.NAME."""
    from trainers.config import promptkd_kd_weight   # loads the trainers (torch): only for a run that starts

    return str(promptkd_kd_weight(dataset_name(dataset)))


def _cross_dataset_kd_weight(dataset: str) -> str:
    """PromptKD's cross-dataset script passes one KD weight for every target: the one its per-dataset table
    gives ImageNet, the dataset whose teacher is distilled."""
    return _promptkd_kd_weight("imagenet")


@dataclass(frozen=True)
class Protocol:
    """The fixed facts of one protocol.

    `layout` is the run folder below OUTPUT_ROOT, a format string over {dataset} {shots} {trainer} {cfg}
    {tag} (the RUN_TAG / EXTRA_OPTS / NPROC suffix, with its "_") {seed} and {part}; tools/parse_results.py
    reads these folders. `message` announces each run (the layout's fields plus {output_dir} and the
    builder's own). `opts` are the config options every run passes right after DATASET.NUM_SHOTS.
    """
    name: str                            # its key in PROTOCOLS; scripts/<name>.sh where a script offers it
    layout: str
    trainer: str                         # default TRAINER
    cfg: str                             # default CFG ("": the trainer's, from TRAINERS)
    message: str
    opts: tuple[str, ...] = ()
    kd_weight: Callable[[str], str] | None = None   # default TRAINER.PROMPTKD.KD_WEIGHT (KD_WEIGHT overrides)
    passes_teacher_root: bool = False    # TEACHER_ROOT -> TRAINER.PROMPTKD.TEACHER_ROOT
    fixed_trainer: bool = False          # TRAINER from the environment is ignored
    config_dir: str | None = None        # configs/trainers/<config_dir or TRAINER>/<CFG>.yaml
    takes_shots: bool = True             # SHOTS -> DATASET.NUM_SHOTS and the shots_<S> folder
    takes_seed: bool = True
    datasets: tuple[str, ...] = ()       # scripts/run_all.sh's default datasets
    installs: str = ""                   # teacher training: where below TEACHER_ROOT the checkpoint goes
    family: str = DISTILLATION           # the trainers it runs (fixed-trainer rows: ignored)
    script: str = ""                     # the script whose row it is for its family ("": `name`)
    trains: bool = False                 # a training run: NPROC applies
    shots_list: tuple[str, ...] = ("16",)   # scripts/run_all.sh's default SHOTS_LIST
    # (dataset, SHOTS values, CFG): the CFG a run of that dataset and shots gets when CFG is unset
    presets: tuple[tuple[str, tuple[str, ...], str], ...] = ()

    def folder(self, settings: Settings, dataset: str, seed: str | None = None, *, trainer: str | None = None,
               cfg: str | None = None, part: str = "") -> str:
        """The run folder (OUTPUT_ROOT joined with the layout; no checks), as the scripts print it."""
        trainer = trainer or self.default_trainer(settings)
        fields = {"dataset": dataset, "shots": settings.shots, "trainer": trainer,
                  "cfg": cfg or self.default_cfg(settings, trainer, dataset), "tag": run_tag(settings),
                  "seed": seed, "part": part}
        return f"{settings.output_root}/{self.layout.format(**fields)}"

    def default_trainer(self, settings: Settings) -> str:
        """TRAINER from the settings, or this protocol's (always, for a protocol with a fixed trainer)."""
        return self.trainer if self.fixed_trainer else (settings.trainer or self.trainer)

    def default_cfg(self, settings: Settings, trainer: str, dataset: str = "") -> str:
        """CFG from the settings, else this row's preset for the dataset and SHOTS (when the trainer has that
        config file), else this row's, else the trainer's default for this script."""
        if settings.cfg:
            return settings.cfg
        for preset_dataset, shots, cfg in self.presets:
            config_dir = CONFIGS / "trainers" / (self.config_dir or trainer)
            if dataset == preset_dataset and settings.shots in shots and (config_dir / f"{cfg}.yaml").is_file():
                return cfg
        row = TRAINERS.get(trainer)
        return self.cfg or (row.default_cfg(self.script_name) if row else "")

    @property
    def script_name(self) -> str:
        return self.script or self.name

    def option(self, key: str) -> str | None:
        """The value this protocol passes for config option `key` (None when it passes none)."""
        return dict(zip(self.opts[::2], self.opts[1::2])).get(key)


_FOLDER = "{dataset}/shots_{shots}/{trainer}/{cfg}{tag}/seed{seed}"
# The AME paper's full-shot ImageNet setting (all training images, 2 epochs, batch 8 as PromptKD): the CFG a
# distillation run of ImageNet with SHOTS full gets by default (the batch-128 preset is chosen with CFG).
IMAGENET_FULL_SHOT_CFG = "vit_b16_imagenet_fullshot_ep2_batch8"
_TEACHER = ("Train teacher: PromptSRC {cfg} on {dataset} ({subsample} classes, {shots} shots), seed {seed} "
            "-> {output_dir}")
PROTOCOLS: dict[str, Protocol] = {p.name: p for p in (
    Protocol("base2new_train", f"base2new/train_base/{_FOLDER}", "PromptKD_RSM", "vit_b16_c2_ep20_batch8_4+4ctx",
             "Run: {trainer} on {dataset}, seed {seed}, shots {shots}, KD_WEIGHT {kd_weight} -> {output_dir}",
             opts=("TRAINER.MODAL", "base2novel", "TRAINER.PROMPTKD.TEMPERATURE", "1.0"),
             kd_weight=_promptkd_kd_weight, passes_teacher_root=True, datasets=BASE2NEW_DATASETS, trains=True,
             presets=(("imagenet", ALL_SHOTS, IMAGENET_FULL_SHOT_CFG),)),
    Protocol("base2new_train_inductive", f"base2new/train_base/{_FOLDER}", "PromptKD_RSM", "",
             "Run: {trainer} on {dataset} (base classes), seed {seed}, shots {shots} -> {output_dir}",
             opts=("DATASET.SUBSAMPLE_CLASSES", "base"), family=INDUCTIVE, script="base2new_train",
             datasets=BASE2NEW_DATASETS, trains=True),
    Protocol("base2new_test_inductive", f"base2new/test_{{part}}/{_FOLDER}", "PromptKD_RSM", "",
             "Evaluate {part} classes (TEST.SPLIT test) of {model_dir} -> {output_dir}",
             opts=("TEST.SPLIT", "test"), family=INDUCTIVE, script="base2new_test"),
    Protocol("fewshot_train", f"fewshot/{_FOLDER}", "CoOp", "",
             "Run (few-shot, all classes): {trainer} on {dataset}, seed {seed}, shots {shots} -> {output_dir}",
             opts=("DATASET.SUBSAMPLE_CLASSES", "all"), family=INDUCTIVE, datasets=BASE2NEW_DATASETS,
             trains=True, shots_list=FEWSHOT_SHOTS),
    Protocol("xd_test", f"xd/test/{_FOLDER}", "CoOp", "",
             "Evaluate (cross-dataset) {model_dir} on {dataset}, all classes -> {output_dir}",
             opts=("DATASET.SUBSAMPLE_CLASSES", "all"), family=INDUCTIVE, datasets=CROSS_DATASET_TARGETS),
    Protocol("dg_test", f"dg/test/{_FOLDER}", "CoOp", "",
             "Evaluate (domain generalisation) {model_dir} on {dataset}, all classes -> {output_dir}",
             opts=("DATASET.SUBSAMPLE_CLASSES", "all"), family=INDUCTIVE, datasets=DG_TARGETS),
    Protocol("base2new_test", f"base2new/test_{{part}}/{_FOLDER}", "PromptKD_RSM", "vit_b16_c2_ep20_batch8_4+4ctx",
             "Evaluate {part} classes (TEST.SPLIT {split}) of {model_dir} -> {output_dir}",
             opts=("TRAINER.MODAL", "base2novel"), passes_teacher_root=True,
             presets=(("imagenet", ALL_SHOTS, IMAGENET_FULL_SHOT_CFG),)),
    Protocol("xd_train", f"xd/train/{_FOLDER}", "PromptKD_RSM", "vit_b16_c2_ep20_batch8_4+4ctx_cross_datasets",
             "Run (cross-dataset): {trainer} on {dataset}, seed {seed}, shots {shots} -> {output_dir}",
             opts=("DATASET.SUBSAMPLE_CLASSES", "all", "TRAINER.MODAL", "cross", "TRAINER.PROMPTKD.TEMPERATURE", "1.0"),
             kd_weight=_cross_dataset_kd_weight, passes_teacher_root=True, datasets=CROSS_DATASET_TARGETS,
             trains=True),
    # Supervised cross-dataset training (CoOp's protocol): once, on ImageNet's 1000 classes with SHOTS labelled
    # shots each; the run is the fewshot_train run, in its folder, so xd_test.sh / dg_test.sh find it.
    Protocol("xd_train_inductive", f"fewshot/{_FOLDER}", "CoOp", "",
             "Run (cross-dataset source, all classes): {trainer} on {dataset}, seed {seed}, shots {shots} -> "
             "{output_dir}", opts=("DATASET.SUBSAMPLE_CLASSES", "all"), family=INDUCTIVE, script="xd_train",
             datasets=("imagenet",), trains=True),
    Protocol("teacher_train", f"teacher/base2new/{_FOLDER}", "PromptSRC", "vit_l14_c2_ep20_batch8_4+4ctx", _TEACHER,
             opts=("DATASET.SUBSAMPLE_CLASSES", "base"), fixed_trainer=True, trains=True,
             installs="{name}/VLPromptLearner/model-best.pth.tar"),
    Protocol("teacher_train_xd", f"teacher/xd/{_FOLDER}", "PromptSRC", "vit_l14_c2_ep20_batch8_4+4ctx", _TEACHER,
             opts=("DATASET.SUBSAMPLE_CLASSES", "all"), fixed_trainer=True, trains=True,
             installs="ImageNet-xd/VLPromptLearner_large/model.pth.tar-20"),
    Protocol("teacher_test", f"teacher/base2new/{_FOLDER}/eval_{{part}}", "PromptSRC", "vit_l14_c2_ep20_batch8_4+4ctx",
             "Evaluate teacher on {part} classes: {model_dir} -> {output_dir}", fixed_trainer=True),
    Protocol("zeroshot", "zeroshot/{dataset}/{trainer}/{cfg}{tag}", "ZeroshotCLIP", "vit_b16",
             "Zero-shot CLIP ({cfg}) on {dataset}, {part} classes -> {output_dir}",
             fixed_trainer=True, config_dir="CoOp", takes_shots=False, takes_seed=False),
)}
DEFAULT_TEACHER_ROOT = "teacher_model"


def protocol_for(script: str, settings: Settings) -> Protocol:
    """The PROTOCOLS row that `scripts/<script>.sh` uses for the settings' TRAINER (by its family)."""
    first = PROTOCOLS[script]
    if first.fixed_trainer:
        return first
    trainer = first.default_trainer(settings)
    family = trainer_row(trainer).family
    for row in PROTOCOLS.values():
        if row.script_name == script and row.family == family:
            return row
    offered = " ".join(name for name, t in TRAINERS.items() if t.family == first.family)
    hint = (" (cross-dataset for them: fewshot_train.sh imagenet, then xd_test.sh / dg_test.sh)"
            if script == "xd_train" else "")
    raise ScriptError(f"{script}.sh does not run {trainer} ({family} trainer); set TRAINER to one of: "
                      f"{offered}{hint}")


ZEROSHOT_PARTS = {"base2new": ("base", "new"), "all": ("all",)}   # MODE -> the evaluated class subsets


# ----------------------------------------------------------------------------------------- what runs
@dataclass(frozen=True)
class TrainRun:
    """One train.py invocation: its arguments (without "train.py"), its run folder, the line announcing it,
    and the part it evaluates (base, new, all; "" for a training run)."""
    argv: tuple[str, ...]
    output_dir: Path
    message: str
    part: str = ""
    nproc: int = 1          # processes (NPROC): more than 1 runs under torch.distributed.run


@dataclass(frozen=True)
class RunSpec:
    """What one protocol call (one script invocation) does, decided before anything runs.

    `runs` are the train.py runs still to do, in order. `notes` report what was found already done
    (printed before the runs). `finish`, when set, runs once every run succeeded (installing a teacher,
    combining zero-shot parts into results.json) and returns its report line. `output_dir` is the
    protocol's run folder (base2new_test: the trained run it evaluates; zeroshot: the folder of the parts).
    """
    protocol: str
    dataset: str
    output_dir: Path
    runs: tuple[TrainRun, ...] = ()
    notes: tuple[str, ...] = ()
    finish: Callable[[], str] | None = None

    @property
    def done(self) -> bool:
        """Nothing left to do (a finished run, an installed teacher)."""
        return not self.runs and self.finish is None


# ----------------------------------------------------------------------------------------- checks
def known_datasets() -> list[str]:
    """The dataset keys a user may pass: the YAML stems of configs/datasets/."""
    return sorted(path.stem for path in (CONFIGS / "datasets").glob("*.yaml"))


def check_dataset(key: str) -> None:
    """The dataset's YAML must exist."""
    if not (CONFIGS / "datasets" / f"{key}.yaml").is_file():
        raise ScriptError(f"unknown dataset '{key}' (no configs/datasets/{key}.yaml); "
                          f"known: {' '.join(known_datasets())}")


def dataset_name(key: str) -> str:
    """DATASET.NAME of a dataset key, read from configs/datasets/<key>.yaml (e.g. dtd -> DescribableTextures)."""
    relative = f"configs/datasets/{key}.yaml"
    try:
        config = yaml.safe_load((REPO_ROOT / relative).read_text()) or {}
    except (OSError, yaml.YAMLError) as error:
        raise ScriptError(f"cannot read {relative}: {error}") from None
    name = (config.get("DATASET") or {}).get("NAME") if isinstance(config, dict) else None
    if not name:
        raise ScriptError(f"{relative} has no DATASET.NAME")
    return str(name)


def config_file(config_dir: str, cfg: str, how_to_choose: str = "set CFG=...") -> str:
    """configs/trainers/<config_dir>/<cfg>.yaml (relative to the repository root); it must exist."""
    relative = f"configs/trainers/{config_dir}/{cfg}.yaml"
    if not (REPO_ROOT / relative).is_file():
        have = " ".join(sorted(p.stem for p in (CONFIGS / "trainers" / config_dir).glob("*.yaml")))
        raise ScriptError(f"config file {relative} not found ({how_to_choose}; available for {config_dir}: "
                          f"{have or 'none'})")
    return relative


def check_seed(seed: str) -> str:
    """A non-negative integer, kept as written (it names the seed<N> folder)."""
    if not re.fullmatch(r"[0-9]+", seed):
        raise ScriptError(f"seed must be a non-negative integer, got '{seed}'")
    return seed


def num_shots(shots: str) -> str:
    """DATASET.NUM_SHOTS for a SHOTS value: an integer as written, or 0 (the whole train split) for full/all."""
    if shots in ALL_SHOTS:
        return "0"
    if not re.fullmatch(r"-?[0-9]+", shots):
        raise ScriptError(f"SHOTS must be an integer or 'full', got '{shots}'")
    return shots


def check_data(root: str, dataset: str) -> None:
    """The data root, and the dataset's folder below it when the key has one, must exist."""
    if not Path(root).is_dir():
        raise ScriptError(f"data root '{root}' does not exist: set DATA=/path/to/datasets")
    folder = DATASET_FOLDERS.get(dataset)
    if folder and not Path(root, folder).is_dir():
        raise ScriptError(f"dataset folder '{root}/{folder}' for '{dataset}' is missing "
                          f"(download it into {root}/{folder}, CoOp layout)")


def extra_opts(settings: Settings) -> list[str]:
    """EXTRA_OPTS split on whitespace into config KEY VALUE pairs (values cannot hold spaces)."""
    opts = settings.extra_opts.split()
    if len(opts) % 2:
        raise ScriptError(f"EXTRA_OPTS must be KEY VALUE pairs, got: {settings.extra_opts}")
    return opts


# ----------------------------------------------------------------------------------------- folder suffix
_TAG_KEEP = re.compile(r"[^A-Za-z0-9_.+=-]")
MAX_READABLE_TAG = 60
SEEDED_TAG = "_seededaug"
SEEDED_AUGMENTATION = ("DATALOADER.SEEDED_AUGMENTATION", "True")   # passed by every training run with NPROC


def processes(settings: Settings) -> int:
    """NPROC as a number of processes (1 when unset); a positive integer."""
    if settings.nproc is None:
        return 1
    if not re.fullmatch(r"[0-9]+", settings.nproc) or int(settings.nproc) < 1:
        raise ScriptError(f"NPROC must be a positive integer (processes on this machine), got '{settings.nproc}'")
    return int(settings.nproc)


def run_tag(settings: Settings) -> str:
    """The run-folder suffix (with its "_"), so that variants never share a folder.

    RUN_TAG wins when set, even empty (no suffix). Otherwise "_kd<KD_WEIGHT>" when KD_WEIGHT is set, then
    "_seededaug" when NPROC is set (a training run's data then come from the seeded augmentation, the same
    whatever the number of processes but not those of a run without it; an evaluation script given the
    same NPROC finds that run), then
    EXTRA_OPTS in readable form: spaces become
    "_", runs of "_" shrink to one, then every character outside [A-Za-z0-9_.+=-] is dropped; longer than
    60 characters, it becomes "opts" + the POSIX cksum of the text and a newline. (The same folder names
    the earlier shell implementation made with `echo | tr -s ' ' '_' | tr -cd ...` and `cksum`.)
    """
    if settings.run_tag is not None:
        return f"_{settings.run_tag}" if settings.run_tag else ""
    # A KD weight set by hand (KD_WEIGHT) changes results, so it names the folder too.
    kd_tag = f"_kd{_TAG_KEEP.sub('', settings.kd_weight)}" if settings.kd_weight else ""
    if settings.nproc:
        kd_tag += SEEDED_TAG
    if not settings.extra_opts:
        return kd_tag
    tag = _TAG_KEEP.sub("", re.sub(r"_+", "_", settings.extra_opts.replace(" ", "_")))
    if len(tag) > MAX_READABLE_TAG:
        tag = f"opts{posix_cksum(os.fsencode(settings.extra_opts + chr(10)))}"
    return f"{kd_tag}_{tag}"


def posix_cksum(data: bytes) -> int:
    """The checksum POSIX `cksum` prints: CRC-32 (polynomial 0x04C11DB7, MSB first) over the data and then
    its length in as few bytes as needed (least significant first), complemented."""
    def feed(crc: int, byte: int) -> int:
        crc ^= byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) if crc & 0x80000000 else crc << 1
        return crc & 0xFFFFFFFF

    crc = 0
    for byte in data:
        crc = feed(crc, byte)
    length = len(data)
    while length:
        crc, length = feed(crc, length & 0xFF), length >> 8
    return ~crc & 0xFFFFFFFF


# ----------------------------------------------------------------------------------------- argv
@dataclass(frozen=True)
class _Call:
    """The checked inputs of one protocol call."""
    protocol: Protocol
    settings: Settings
    dataset: str
    seed: str | None
    trainer: str
    cfg: str
    config_file: str
    num_shots: str | None

    @property
    def seeded(self) -> bool:
        """A training run with NPROC set: it passes DATALOADER.SEEDED_AUGMENTATION True."""
        return self.protocol.trains and self.settings.nproc is not None

    def folder(self, part: str = "") -> str:
        return self.protocol.folder(self.settings, self.dataset, self.seed, trainer=self.trainer, cfg=self.cfg,
                                    part=part)

    def argv(self, output_dir: str, flags: tuple[str, ...] = (), opts: tuple[str, ...] = (),
             kd_weight: str | None = None, extra: list[str] | tuple[str, ...] = ()) -> tuple[str, ...]:
        """train.py's arguments: data, seed, trainer, the two YAMLs, the run folder, `flags`, then the config
        options: DATASET.NUM_SHOTS, the protocol's, `opts`, the KD weight, the teacher root, the seeded
        augmentation (NPROC set), EXTRA_OPTS."""
        argv = ["--root", self.settings.data]
        if self.seed is not None:
            argv += ["--seed", self.seed]
        argv += ["--trainer", self.trainer, "--dataset-config-file", f"configs/datasets/{self.dataset}.yaml",
                 "--config-file", self.config_file, "--output-dir", output_dir, *flags]
        if self.num_shots is not None:
            argv += ["DATASET.NUM_SHOTS", self.num_shots]
        argv += [*self.protocol.opts, *opts]
        if kd_weight is not None:
            argv += ["TRAINER.PROMPTKD.KD_WEIGHT", kd_weight]
        if self.protocol.passes_teacher_root and self.settings.teacher_root:
            argv += ["TRAINER.PROMPTKD.TEACHER_ROOT", self.settings.teacher_root]
        if self.seeded:
            argv += SEEDED_AUGMENTATION
        return tuple(argv + list(extra))

    def run(self, output_dir: str, argv: tuple[str, ...], **message_fields: str) -> TrainRun:
        fields = {"dataset": self.dataset, "seed": self.seed, "trainer": self.trainer, "cfg": self.cfg,
                  "shots": self.settings.shots, "output_dir": output_dir, "part": "", **message_fields}
        nproc = processes(self.settings) if self.protocol.trains else 1
        return TrainRun(argv, Path(output_dir), self.protocol.message.format(**fields), fields["part"], nproc)


def _check(protocol: Protocol, dataset: str, seed: str | None, settings: Settings, cfg: str | None = None,
           how_to_choose: str = "set CFG=...") -> _Call:
    """The checks every protocol call makes, in order: seed, dataset, SHOTS, NPROC, trainer config.
    `protocol`: the script's first row; the call uses the row of the trainer's family (`protocol_for`)."""
    if protocol.takes_seed:
        check_seed(seed)
    check_dataset(dataset)
    shots = num_shots(settings.shots) if protocol.takes_shots else None
    if protocol.trains:
        processes(settings)
    protocol = protocol_for(protocol.script_name, settings)
    trainer = protocol.default_trainer(settings)
    cfg = cfg or protocol.default_cfg(settings, trainer, dataset)
    path = config_file(protocol.config_dir or trainer, cfg, how_to_choose)
    return _Call(protocol, settings, dataset, seed if protocol.takes_seed else None, trainer, cfg, path, shots)


def _skip_message(folder: str) -> str:
    return f"Skipping: results already exist at {folder}/{RESULTS_FILENAME} (delete that folder to rerun)"


def check_finished_run(folder: str, argv: tuple[str, ...]) -> None:
    """Refuse to skip a finished run made with another configuration than ``argv`` would run.

    A results.json counts as this run's only when its configuration hash equals the hash of the config
    ``argv`` builds (seed and folders left out, see dassl/config/identity.py). Otherwise one error names the
    keys that differ (from the run's config.yaml; older runs without it: the two hashes) and the ways out.
    Loads torch: called only when a finished run is found.
    """
    import train
    from dassl.config import ConfigError, config_hash, config_items, describe_differences, differing_keys, merge_yaml
    from dassl.config.run_config import run_config_path
    from trainers.config import default_config

    wanted = train.setup_cfg(train.build_parser().parse_args(list(argv)))
    with open(Path(folder, RESULTS_FILENAME), encoding="utf-8") as stream:
        saved_hash = json.load(stream).get("config_hash")
    if saved_hash == config_hash(wanted):
        return
    differences = f"configuration hash {saved_hash} (finished run) against {config_hash(wanted)} (now)"
    saved_config = run_config_path(folder)
    if Path(saved_config).is_file():
        try:
            # Merged onto today's defaults: keys added to the code since then count with their defaults.
            saved_items = config_items(merge_yaml(default_config(), saved_config))
        except ConfigError:
            saved_items = None  # a key the code no longer has: compare the hashes only
        if saved_items is not None:
            if not differing_keys(saved_items, config_items(wanted)):
                return
            differences = describe_differences(saved_items, config_items(wanted), saved_name="finished run")
    raise ScriptError(f"{folder} holds a finished run of another configuration: {differences}. Use another "
                      f"OUTPUT_ROOT or RUN_TAG for this one, or delete that folder to redo it")


def _training(name: str, dataset: str, seed: str, settings: Settings) -> RunSpec:
    """One training run (base2new_train, xd_train, fewshot_train): skipped when its results.json exists
    (and was made with the same configuration). KD_WEIGHT applies to the rows that pass a KD weight."""
    call = _check(PROTOCOLS[name], dataset, seed, settings)
    folder = call.folder()
    finished = Path(folder, RESULTS_FILENAME).is_file()
    if not finished:  # before the KD-weight lookup, which loads torch: a missing dataset is reported at once
        check_data(settings.data, dataset)
    extra = extra_opts(settings)
    kd_weight = None
    if call.protocol.kd_weight is not None:
        kd_weight = settings.kd_weight or call.protocol.kd_weight(dataset)
    argv = call.argv(folder, kd_weight=kd_weight, extra=extra)
    if finished:
        check_finished_run(folder, argv)
        return RunSpec(name, dataset, Path(folder), notes=(_skip_message(folder),))
    return RunSpec(name, dataset, Path(folder), runs=(call.run(folder, argv, kd_weight=kd_weight or ""),))


# ----------------------------------------------------------------------------------------- protocols
def base2new_train(dataset: str, seed: str, settings: Settings = Settings()) -> RunSpec:
    """Base-to-new: one run that trains and scores Base and New. A distillation trainer follows PromptKD's
    transductive protocol (Base on TEST.SPLIT val, New on test); an inductive one trains on SHOTS shots of
    the base classes (DATASET.SUBSAMPLE_CLASSES base) and scores base and new test images."""
    return _training("base2new_train", dataset, seed, settings)


def xd_train(dataset: str, seed: str, settings: Settings = Settings()) -> RunSpec:
    """Cross-dataset training. A distillation trainer: distillation from the ImageNet-xd teacher on one target
    dataset, all its classes. An inductive trainer: its one source run on ImageNet, all classes, SHOTS
    labelled shots (the fewshot_train run), which xd_test.sh then evaluates on each target."""
    row = protocol_for("xd_train", settings)
    if row.family == INDUCTIVE and dataset != "imagenet":
        raise ScriptError(f"xd_train.sh trains {row.default_trainer(settings)} once, on imagenet (its source "
                          f"dataset), not on {dataset}: run xd_train.sh imagenet <seed>, then xd_test.sh {dataset} "
                          "<seed> to evaluate it there")
    return _training("xd_train", dataset, seed, settings)


def fewshot_train(dataset: str, seed: str, settings: Settings = Settings()) -> RunSpec:
    """Few-shot learning (inductive trainers): SHOTS shots of every class (DATASET.SUBSAMPLE_CLASSES all).
    Trained on imagenet, it is also the source model that xd_test and dg_test evaluate."""
    return _training("fewshot_train", dataset, seed, settings)


def _model_dir(script: str, call: _Call, dataset: str, seed: str) -> str:
    """The run folder of `script` (a training protocol) for the call's trainer and CFG; it must exist."""
    row = protocol_for(script, call.settings)
    model_dir = row.folder(call.settings, dataset, seed, trainer=call.trainer, cfg=call.cfg)
    if not Path(model_dir).is_dir():
        raise ScriptError(f"no trained run at {model_dir} (train it with TRAINER={call.trainer} "
                          f"SHOTS={call.settings.shots} scripts/{script}.sh {dataset} {seed})")
    return model_dir


def _eval_flags(model_dir: str, settings: Settings, family: str) -> tuple[str, ...]:
    """--model-dir, --eval-only and the checkpoint: LOAD_EPOCH, else a distillation run's model-best (the
    trainer's default), else the last epoch an inductive run saved (these trainers keep no best model)."""
    epoch = settings.load_epoch or (trained_epoch(model_dir) if family == INDUCTIVE else None)
    flags = ("--model-dir", model_dir, "--eval-only")
    return flags + ("--load-epoch", epoch) if epoch else flags


def trained_epoch(model_dir: str) -> str:
    """The epoch of the last checkpoint a run saved, from Dassl's `checkpoint` index in its model folder."""
    indexes = sorted(Path(model_dir).glob("*/checkpoint"))
    if not indexes:
        raise ScriptError(f"{model_dir} holds no checkpoint (its training has not finished: rerun it)")
    return last_checkpoint(indexes[0].parent).rsplit("-", 1)[-1]


def base2new_test(dataset: str, seed: str, settings: Settings = Settings()) -> RunSpec:
    """Evaluate a base2new_train run on the base and the new classes, into test_base/ and test_new/.

    A distillation run: Base = TEST.SPLIT val, New = TEST.SPLIT test (PromptKD's splits). An inductive
    run: DATASET.SUBSAMPLE_CLASSES base / new, both on TEST.SPLIT test. Both evaluations always run (no
    skip); LOAD_EPOCH picks model.pth.tar-<E> (default: model-best, or an inductive run's last epoch).
    """
    call = _check(PROTOCOLS["base2new_test"], dataset, seed, settings)
    model_dir = _model_dir("base2new_train", call, dataset, seed)
    check_data(settings.data, dataset)
    extra = extra_opts(settings)
    flags = _eval_flags(model_dir, settings, call.protocol.family)
    inductive = call.protocol.family == INDUCTIVE
    runs = []
    for part, split in (("base", "val"), ("new", "test")):
        folder = call.folder(part)
        opts = ("DATASET.SUBSAMPLE_CLASSES", part) if inductive else ("TEST.SPLIT", split)
        argv = call.argv(folder, flags, opts, extra=extra)
        runs.append(call.run(folder, argv, part=part, split=split, model_dir=model_dir))
    return RunSpec("base2new_test", dataset, Path(model_dir), runs=tuple(runs))


def _transfer_test(name: str, dataset: str, seed: str, settings: Settings, targets: tuple[str, ...]) -> RunSpec:
    """Evaluate the ImageNet fewshot_train run of the call's trainer on `dataset` (all classes), once:
    skipped when the evaluation's results.json exists (OVERWRITE=1 evaluates again)."""
    call = _check(PROTOCOLS[name], dataset, seed, settings)
    if dataset not in targets:
        raise ScriptError(f"{name}.sh evaluates on one of: {' '.join(targets)} (got '{dataset}')")
    model_dir = _model_dir("fewshot_train", call, "imagenet", seed)
    folder = call.folder()
    if Path(folder, RESULTS_FILENAME).is_file() and not settings.overwrite:
        return RunSpec(name, dataset, Path(folder), notes=(
            f"Skipping: {folder}/{RESULTS_FILENAME} exists (set OVERWRITE=1 to evaluate again)",))
    check_data(settings.data, dataset)
    argv = call.argv(folder, _eval_flags(model_dir, settings, INDUCTIVE), extra=extra_opts(settings))
    return RunSpec(name, dataset, Path(folder), runs=(call.run(folder, argv, model_dir=model_dir),))


def xd_test(dataset: str, seed: str, settings: Settings = Settings()) -> RunSpec:
    """Cross-dataset transfer of an inductive trainer: its ImageNet model (fewshot_train imagenet) on a
    target dataset, all classes, evaluation only."""
    return _transfer_test("xd_test", dataset, seed, settings, CROSS_DATASET_TARGETS)


def dg_test(dataset: str, seed: str, settings: Settings = Settings()) -> RunSpec:
    """Domain generalisation: the ImageNet model of an inductive trainer on ImageNet-V2 / -Sketch / -A / -R."""
    return _transfer_test("dg_test", dataset, seed, settings, DG_TARGETS)


def teacher_train(dataset: str, seed: str, settings: Settings = Settings()) -> RunSpec:
    """Train a PromptSRC teacher and install its last checkpoint where the distillation trainers look.

    With `settings.xd` the cross-dataset teacher (all classes; meant for imagenet). Skipped when a teacher
    is installed (unless `settings.overwrite`); training is skipped when its run already wrote a checkpoint,
    which is then installed.
    """
    name = "teacher_train_xd" if settings.xd else "teacher_train"
    call = _check(PROTOCOLS[name], dataset, seed, settings)
    teacher_root = settings.teacher_root or DEFAULT_TEACHER_ROOT
    destination = f"{teacher_root}/{call.protocol.installs.format(name=dataset_name(dataset))}"
    folder = call.folder()
    if Path(destination).exists() and not settings.overwrite:
        return RunSpec(name, dataset, Path(folder), notes=(
            f"Skipping: a teacher is already installed at {destination} (set OVERWRITE=1 to replace it)",))
    check_data(settings.data, dataset)
    extra = extra_opts(settings)
    checkpoints = Path(folder, "VLPromptLearner")
    runs = ()
    if not _names_a_checkpoint(checkpoints / "checkpoint"):
        argv = call.argv(folder, extra=extra)
        runs = (call.run(folder, argv, subsample=call.protocol.option("DATASET.SUBSAMPLE_CLASSES")),)
    return RunSpec(name, dataset, Path(folder), runs=runs,
                   finish=lambda: install_teacher(checkpoints, Path(destination)))


def _names_a_checkpoint(index: Path) -> bool:
    """Whether Dassl's `checkpoint` index file exists and has a non-empty line."""
    return index.is_file() and any(index.read_text().splitlines())


def last_checkpoint(checkpoints: Path) -> str:
    """The file name on the first line of Dassl's `checkpoint` index in `checkpoints` (the last one saved)."""
    index = checkpoints / "checkpoint"
    if not index.is_file():
        raise ScriptError(f"training wrote no checkpoint in {checkpoints}")
    lines = index.read_text().splitlines()
    last = "".join(lines[0].split()) if lines else ""
    if not last or not (checkpoints / last).is_file():
        raise ScriptError(f"checkpoint file {checkpoints}/{last} named in {index} is missing")
    return last


def install_teacher(checkpoints: Path, destination: Path) -> str:
    """Copy the last checkpoint named in `checkpoints`/checkpoint (PromptSRC's teacher config saves the
    last epoch, with its Gaussian-aggregated weights) to `destination`; returns the report line."""
    last = last_checkpoint(checkpoints)
    destination.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(checkpoints / last, destination)
    return f"Teacher installed: {checkpoints}/{last} -> {destination}"


def teacher_test(dataset: str, seed: str, settings: Settings = Settings()) -> RunSpec:
    """Evaluate a teacher_train run (its last checkpoint) on the base and on the new classes
    (DATASET.SUBSAMPLE_CLASSES base / new), into eval_base/ and eval_new/ inside the run folder.

    No script offers it yet; the SynthShapes benchmark reports the prompt-tuned teacher with it.
    """
    call = _check(PROTOCOLS["teacher_test"], dataset, seed, settings)
    model_dir = PROTOCOLS["teacher_train"].folder(settings, dataset, seed, cfg=call.cfg)
    epoch = last_checkpoint(Path(model_dir, "VLPromptLearner")).rsplit("-", 1)[-1]
    check_data(settings.data, dataset)
    extra = extra_opts(settings)
    flags = ("--eval-only", "--model-dir", model_dir, "--load-epoch", epoch)
    runs = []
    for part in ("base", "new"):
        folder = call.folder(part)
        argv = call.argv(folder, flags, ("DATASET.SUBSAMPLE_CLASSES", part), extra=extra)
        runs.append(call.run(folder, argv, part=part, model_dir=model_dir))
    return RunSpec("teacher_test", dataset, Path(model_dir), runs=tuple(runs))


def zeroshot(dataset: str, cfg: str = "vit_b16", settings: Settings = Settings()) -> RunSpec:
    """Zero-shot CLIP (ZeroshotCLIP, the dataset's template) with configs/trainers/CoOp/<cfg>.yaml.

    MODE base2new evaluates the base and new classes and writes results.json (Base / New / HM); MODE all
    one evaluation over all classes. A part whose zeroshot.json exists is not evaluated again, and the
    whole call is skipped when results.json exists. ResNet configs are refused: the CLIP builder reads
    ViT weights only.
    """
    protocol = PROTOCOLS["zeroshot"]
    cfg = cfg or protocol.cfg
    check_dataset(dataset)
    if RESNET_CONFIG.match(cfg):
        raise ScriptError(f"'{cfg}' is a ResNet CLIP config, and our CLIP builder supports ViT CLIPs only; "
                          f"use vit_b16 or vit_b32")
    call = _check(protocol, dataset, None, settings, cfg=cfg, how_to_choose="pass another <cfg>")
    if settings.mode not in ZEROSHOT_PARTS:
        raise ScriptError(f"MODE must be base2new or all, got '{settings.mode}'")
    root = call.folder()
    if Path(root, RESULTS_FILENAME).is_file():
        return RunSpec("zeroshot", dataset, Path(root), notes=(_skip_message(root),))
    check_data(settings.data, dataset)
    extra = extra_opts(settings)
    runs, notes = [], []
    for part in ZEROSHOT_PARTS[settings.mode]:
        folder = f"{root}/{part}"
        if Path(folder, ZEROSHOT_PART_FILENAME).is_file():
            notes.append(f"Zero-shot CLIP ({call.cfg}) on {dataset}, {part} classes: already evaluated in {folder}")
            continue
        argv = call.argv(folder, ("--eval-only",), ("DATASET.SUBSAMPLE_CLASSES", part), extra=extra)
        runs.append(call.run(folder, argv, part=part))
    mode = settings.mode
    return RunSpec("zeroshot", dataset, Path(root), runs=tuple(runs), notes=tuple(notes),
                   finish=lambda: write_zeroshot_results(Path(root), mode))


def write_zeroshot_results(root: Path, mode: str) -> str:
    """Combine the evaluated parts below `root` into its results.json (zero-shot: best = last); the report line."""
    from trainers.results import write_zeroshot_results as write   # loads the trainers (torch)

    try:
        path, entry = write(str(root), mode)
    except FileNotFoundError as error:
        raise ScriptError(str(error)) from None
    return f"Zero-shot result written to {path}: {entry}"


# The protocol functions by script name (scripts/<name>.sh): each takes the script's positional
# arguments and a Settings.
BUILDERS: dict[str, Callable[..., RunSpec]] = {
    "base2new_train": base2new_train,
    "base2new_test": base2new_test,
    "xd_train": xd_train,
    "fewshot_train": fewshot_train,
    "xd_test": xd_test,
    "dg_test": dg_test,
    "teacher_train": teacher_train,
    "zeroshot": zeroshot,
}
