"""The rows of the AME paper's Tables 1 and 2 as runs of this codebase, in one place.

`bash scripts/run_all.sh table1|table2` (scripts/launch.py) starts the runs `plan` lists, and
tools/paper_table.py finds their results.json with `result_folder`, so both read the same table below:
each paper row is the protocol script calls that produce it (script, trainer, CFG, SHOTS), and the last
call of a row is the one whose results.json holds the row's numbers. The paper's own numbers are in
docs/ame_paper_tables.yaml (`load_paper_numbers`), under the same row keys.

- Table 1 (base-to-new, 11 datasets): CLIP is zero-shot CLIP on the base and the new classes; CoOp,
  MaPLe and PromptSRC train on 16 labelled shots of the base classes with their published base-to-new
  configs (CoOp on ImageNet: its 50-epoch config, as CoCoOp's scripts ran it); PromptKD and PKD + RSM
  (PromptKD_RSM) follow PromptKD's transductive protocol with 16 unlabelled shots (dagger) or the whole
  training split (double dagger; on ImageNet the paper's 2-epoch full-shot config).
- Table 2 (cross-dataset, 10 targets): CLIP is zero-shot CLIP on all classes of each target; CoOp, MaPLe
  and PromptSRC train once on 16 shots of ImageNet (all classes, their cross-dataset configs) and are
  evaluated on each target; PromptKD and PKD + RSM distil the ImageNet teacher on each target's
  unlabelled images (16 shots or full).

Every run is one call of a protocol script, so finished runs are skipped exactly as the scripts skip
them. Nothing here imports torch.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import yaml

from scripts import runs
from scripts.runs import BASE2NEW_DATASETS, CROSS_DATASET_TARGETS, PROTOCOLS, REPO_ROOT, ScriptError, Settings

PAPER_NUMBERS = REPO_ROOT / "docs" / "ame_paper_tables.yaml"
AVERAGE = "average"   # the data file's column of the paper's averages
TABLE_DATASETS = {"table1": BASE2NEW_DATASETS, "table2": CROSS_DATASET_TARGETS}
ZEROSHOT = "zeroshot"
ALL_CLASSES_TAG = "allclasses"   # run-folder suffix of Table 2's zero-shot runs (see `Step.tag`)


@dataclass(frozen=True)
class Step:
    """One protocol script call per dataset (and seed) of a paper row.

    `datasets`: the datasets it runs on; empty means the table's datasets (those the row is scored on).
    `cfg_for`: (dataset, CFG) pairs that replace `cfg` on those datasets. `mode`: MODE of the zero-shot script.
    `tag`: a run-folder suffix appended to the user's (RUN_TAG), so that runs of this step never share a
    folder with another protocol's (zero-shot CLIP on all classes and on base/new would: the zero-shot
    folder does not name MODE).
    """
    script: str
    trainer: str
    cfg: str
    shots: str = "16"
    datasets: tuple[str, ...] = ()
    cfg_for: tuple[tuple[str, str], ...] = ()
    mode: str = ""
    tag: str = ""

    def cfg_of(self, dataset: str) -> str:
        return dict(self.cfg_for).get(dataset, self.cfg)

    @property
    def seeded(self) -> bool:
        """Whether it runs once per seed (zero-shot CLIP has no seed)."""
        return self.script != ZEROSHOT


@dataclass(frozen=True)
class Row:
    """A row of a paper table: its key in docs/ame_paper_tables.yaml, the label the written table shows,
    and its steps (the last one is scored). `not_run`: why this codebase cannot produce the row ("" when
    it can); such a row keeps the paper's numbers and shows no runs."""
    key: str
    label: str
    steps: tuple[Step, ...] = ()
    not_run: str = ""

    @property
    def scored(self) -> Step:
        return self.steps[-1]


_B2N_KD = "vit_b16_c2_ep20_batch8_4+4ctx"
_XD_KD = "vit_b16_c2_ep20_batch8_4+4ctx_cross_datasets"
_IMAGENET_FULL = (("imagenet", "vit_b16_imagenet_fullshot_ep2_batch8"),)   # the paper's 2 ImageNet epochs


def _transfer(trainer: str, cfg: str) -> tuple[Step, ...]:
    """Train on 16 shots of ImageNet (all classes), then evaluate on each target."""
    return (Step("fewshot_train", trainer, cfg, datasets=("imagenet",)), Step("xd_test", trainer, cfg))


TABLES: dict[str, tuple[Row, ...]] = {
    "table1": (
        Row("CLIP", "CLIP (zero-shot)", (Step(ZEROSHOT, "ZeroshotCLIP", "vit_b16", mode="base2new"),)),
        Row("CoOp", "CoOp", (Step("base2new_train", "CoOp", "vit_b16_ctxv1",
                                  cfg_for=(("imagenet", "vit_b16_ep50_ctxv1"),)),)),
        Row("MaPLe", "MaPLe", (Step("base2new_train", "MaPLe", "vit_b16_c2_ep5_batch4_2ctx"),)),
        Row("PromptSRC", "PromptSRC", (Step("base2new_train", "PromptSRC", "vit_b16_c2_ep20_batch4_4+4ctx"),)),
        Row("PromptKD_16", "PromptKD † (16 shots)", (Step("base2new_train", "PromptKD", _B2N_KD),)),
        Row("PromptKD_full", "PromptKD ‡ (full)", (Step("base2new_train", "PromptKD", _B2N_KD, "full",
                                                       cfg_for=_IMAGENET_FULL),)),
        Row("PKD_RSM_16", "PKD + RSM † (16 shots)", (Step("base2new_train", "PromptKD_RSM", _B2N_KD),)),
        Row("PKD_RSM_full", "PKD + RSM ‡ (full)", (Step("base2new_train", "PromptKD_RSM", _B2N_KD, "full",
                                                       cfg_for=_IMAGENET_FULL),)),
    ),
    "table2": (
        Row("CLIP", "CLIP (zero-shot)", (Step(ZEROSHOT, "ZeroshotCLIP", "vit_b16", mode="all",
                                              tag=ALL_CLASSES_TAG),)),
        Row("CoOp", "CoOp", _transfer("CoOp", "vit_b16_ep50_ctxv1")),
        Row("MaPLe", "MaPLe", _transfer("MaPLe", "vit_b16_c2_ep5_batch4_2ctx_cross_datasets")),
        Row("PromptSRC", "PromptSRC", _transfer("PromptSRC", "vit_b16_c2_ep20_batch4_4+4ctx_cross_datasets")),
        Row("PromptKD_16", "PromptKD † (16 shots)", (Step("xd_train", "PromptKD", _XD_KD),)),
        Row("PromptKD_full", "PromptKD ‡ (full)", (Step("xd_train", "PromptKD", _XD_KD, "full"),)),
        Row("PKD_RSM_16", "PKD + RSM † (16 shots)", (Step("xd_train", "PromptKD_RSM", _XD_KD),)),
        Row("PKD_RSM_full", "PKD + RSM ‡ (full)", (Step("xd_train", "PromptKD_RSM", _XD_KD, "full"),)),
    ),
}
SEEDS = ("1", "2", "3")


@dataclass(frozen=True)
class PlannedRun:
    """One protocol script call: `env` holds the variables it sets (TRAINER, SHOTS, CFG, MODE, RUN_TAG)
    on top of the caller's environment; `args` are the script's positional arguments."""
    row: Row
    step: Step
    dataset: str
    seed: str | None
    env: Mapping[str, str]
    args: tuple[str, ...]

    def command_line(self) -> str:
        """The shell command that makes this run, e.g. ``TRAINER=CoOp SHOTS=16 CFG=... bash scripts/....sh``."""
        assignments = " ".join(f"{name}={value}" for name, value in self.env.items())
        return f"{assignments} bash scripts/{self.step.script}.sh {' '.join(self.args)}"


def step_env(step: Step, dataset: str, env: Mapping[str, str]) -> dict[str, str]:
    """The variables a step's call sets over `env`: TRAINER, SHOTS and CFG, or for the zero-shot script
    (fixed trainer, no shots, its config an argument) MODE; RUN_TAG when the step has a tag (the user's
    own suffix, then the step's)."""
    if step.script == ZEROSHOT:
        own = {"MODE": step.mode}
    else:
        own = {"TRAINER": step.trainer, "SHOTS": step.shots, "CFG": step.cfg_of(dataset)}
    if step.tag:
        user_tag = runs.run_tag(Settings.from_env(env))
        own["RUN_TAG"] = f"{user_tag[1:]}_{step.tag}" if user_tag else step.tag
    return own


def table_rows(table: str) -> tuple[Row, ...]:
    """The rows of `table` ("table1" or "table2"); a ScriptError names the known tables."""
    if table not in TABLES:
        raise ScriptError(f"unknown paper table '{table}'; known: {' '.join(TABLES)}")
    return TABLES[table]


def plan(table: str, env: Mapping[str, str], datasets: Sequence[str] | None = None,
         seeds: Sequence[str] = SEEDS) -> list[PlannedRun]:
    """Every script call of the table's runnable rows, in row order, then step, dataset and seed.

    `datasets` narrows the table's datasets (the steps that run on a fixed source, ImageNet, still run
    when any target is left); a dataset outside the table is refused.
    """
    chosen = list(TABLE_DATASETS[table] if datasets is None else datasets)
    outside = [d for d in chosen if d not in TABLE_DATASETS[table]]
    if outside:
        raise ScriptError(f"{table} has no dataset {' '.join(outside)}; its datasets: "
                          f"{' '.join(TABLE_DATASETS[table])}")
    planned = []
    for row in table_rows(table):
        if row.not_run or not chosen:
            continue
        for step in row.steps:
            for dataset in step.datasets or chosen:
                own = step_env(step, dataset, env)
                if not step.seeded:
                    planned.append(PlannedRun(row, step, dataset, None, own, (dataset, step.cfg_of(dataset))))
                    continue
                for seed in seeds:
                    planned.append(PlannedRun(row, step, dataset, seed, own, (dataset, seed)))
    return planned


def result_folder(step: Step, dataset: str, seed: str | None, env: Mapping[str, str]) -> Path:
    """The run folder whose results.json the step writes for (dataset, seed), under the environment the
    runs were started with (OUTPUT_ROOT, RUN_TAG, EXTRA_OPTS, KD_WEIGHT and NPROC name folders)."""
    settings = Settings.from_env({**env, **step_env(step, dataset, env)})
    if not step.seeded:
        return Path(PROTOCOLS[ZEROSHOT].folder(settings, dataset, cfg=step.cfg_of(dataset)))
    protocol = runs.protocol_for(step.script, settings)
    return Path(protocol.folder(settings, dataset, seed, trainer=step.trainer, cfg=step.cfg_of(dataset)))


@dataclass(frozen=True)
class PaperTable:
    """A table of docs/ame_paper_tables.yaml: `values[row][column]` is the tuple of the paper's numbers
    (one per metric), `inconsistencies` the entries the file lists (each names row, column and metric)."""
    name: str
    citation: str
    metrics: tuple[str, ...]
    columns: tuple[str, ...]
    printed_columns: tuple[str, ...]
    values: Mapping[str, Mapping[str, tuple[float, ...]]]
    inconsistencies: tuple[Mapping, ...]
    paper: str

    def notes_for(self, row: str) -> list[str]:
        """The inconsistency notes of one row."""
        return [str(entry["note"]) for entry in self.inconsistencies if entry["row"] == row]


def load_paper_numbers(table: str, path: str | Path = PAPER_NUMBERS) -> PaperTable:
    """One table of the paper's numbers. Table 1's rows map column -> [Base, New, HM]; a one-metric
    table's rows are lists in the order of `columns`. A malformed file is an error naming it."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        spec = data["tables"][table]
        metrics, columns = tuple(spec["metrics"]), tuple(spec["columns"])
        values = {}
        for row, cells in spec["rows"].items():
            if len(metrics) == 1:
                cells = dict(zip(columns, ([value] for value in cells))) if len(cells) == len(columns) else {}
            values[row] = {column: tuple(float(v) for v in cells[column]) for column in columns}
            if any(len(numbers) != len(metrics) for numbers in values[row].values()):
                raise ValueError(f"row {row} has a cell without one number per metric")
        return PaperTable(table, " ".join(str(spec["citation"]).split()), metrics, columns,
                          tuple(spec["printed_columns"]), values, tuple(spec.get("inconsistencies") or ()),
                          " ".join(str(data["paper"]).split()))
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError) as error:
        raise ScriptError(f"cannot read {table} from {path}: {error!r}; restore the file from the "
                          f"repository") from None
