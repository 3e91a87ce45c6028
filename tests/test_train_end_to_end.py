"""The toy linear probe trained, resumed and evaluated through `train.py` (in-process)."""
from __future__ import annotations

import re

import pytest
import torch

import toy_engine  # noqa: F401  (registers ToyFolder and ToyLinearProbe)
from dassl.utils import close_logger
from dassl.utils.torchtools import load_checkpoint
from toy_engine import SimulatedKill, ToyLinearProbe, make_image_folder, toy_yaml

train_py = pytest.importorskip("train")

torch.set_num_threads(1)

TOY_YAML = toy_yaml(3, promptkd_style=True)

RESULT_BLOCK = re.compile(
    r"=> result\n\* total: 6\n\* correct: \d\n\* accuracy: \d+\.\d%\n\* error: \d+\.\d%\n\* macro_f1: \d+\.\d%\n")


@pytest.fixture
def toy_run(tmp_path):
    """Returns ``run(*extra_args)`` that calls train.main with the toy dataset/config."""
    data = make_image_folder(tmp_path / "data")
    config = tmp_path / "toy.yaml"
    config.write_text(TOY_YAML)

    def run(*extra):
        argv = ["--root", str(data), "--config-file", str(config), "--trainer", "ToyLinearProbe",
                "--seed", "0", *extra, "DATASET.NAME", "ToyFolder", "USE_CUDA", "False"]
        try:
            return train_py.main(train_py.build_parser().parse_args(argv))
        finally:
            close_logger()

    yield run
    ToyLinearProbe.stop_after_epoch = None


def weights(trainer):
    return trainer._models["probe"].state_dict()


def test_train_then_eval_only(toy_run, tmp_path):
    out = tmp_path / "out"
    trainer = toy_run("--output-dir", str(out))
    assert trainer.cfg.SEED == 0  # --seed 0 is a real seed

    log = (out / "log.txt").read_text()
    assert "Loading trainer: ToyLinearProbe" in log and "Loading dataset: ToyFolder" in log
    assert "No checkpoint found, train from scratch" in log
    assert len(re.findall(r"^epoch \[\d/3\] batch \[2/3\] ", log, re.M)) == 3
    after_training = log.split("Finish training", 1)[1]
    assert "Deploy the model with the best val performance" in after_training
    assert RESULT_BLOCK.search(after_training)
    assert re.search(r"^Elapsed: \d+:\d\d:\d\d$", log, re.M)

    folder = out / "probe"
    assert sorted(p.name for p in folder.iterdir()) == ["checkpoint", "model-best.pth.tar", "model.pth.tar-3"]
    assert torch.load(folder / "model.pth.tar-3", weights_only=True)["epoch"] == 3

    evaluated = toy_run("--output-dir", str(tmp_path / "eval"), "--eval-only", "--model-dir", str(out))
    eval_log = (tmp_path / "eval" / "log.txt").read_text()
    assert f"Load {folder / 'model-best.pth.tar'} to probe" in eval_log
    assert RESULT_BLOCK.search(eval_log)
    best = load_checkpoint(str(folder / "model-best.pth.tar"))["state_dict"]
    assert all(torch.equal(weights(evaluated)[k], best[k]) for k in best)


def test_resume_flag_continues_a_killed_run_exactly(toy_run, tmp_path):
    full = toy_run("--output-dir", str(tmp_path / "full"))

    ToyLinearProbe.stop_after_epoch = 2
    with pytest.raises(SimulatedKill):
        toy_run("--output-dir", str(tmp_path / "killed"))
    ToyLinearProbe.stop_after_epoch = None

    resumed = toy_run("--output-dir", str(tmp_path / "continued"), "--resume", str(tmp_path / "killed"))
    log = (tmp_path / "continued" / "log.txt").read_text()
    assert re.search(r"^Found checkpoint at .*killed \(will resume training from model-last\.pth\.tar; "
                     r"as asked by RESUME\)$", log, re.M)
    assert "epoch [1/3]" not in log and "epoch [3/3]" in log
    assert all(torch.equal(weights(resumed)[k], v) for k, v in weights(full).items())


def test_run_folder_keeps_the_merged_config(toy_run, tmp_path):
    from dassl.config import config_hash, merge_yaml
    from dassl.config.run_config import run_config_path
    from trainers.config import default_config

    out = tmp_path / "out"
    trainer = toy_run("--output-dir", str(out))
    reloaded = merge_yaml(default_config(), run_config_path(str(out)))
    assert reloaded.OPTIM.MAX_EPOCH == trainer.cfg.OPTIM.MAX_EPOCH and reloaded.SEED == 0
    assert config_hash(reloaded) == config_hash(trainer.cfg)
