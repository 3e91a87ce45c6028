"""train.py: flags -> config, fixed PromptKD quirks (--seed 0, --resume DIR), dispatch, user errors."""
import pytest

import train
from dassl.engine import TRAINER_REGISTRY
from dassl.engine.trainer import TrainerBase


class CliProbeTrainer(TrainerBase):
    """Records what train.py asked of it; needs no data or model."""

    calls = []

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        CliProbeTrainer.calls.append(("init", cfg.SEED, cfg.RESUME))

    def load_model(self, directory, epoch=None):
        CliProbeTrainer.calls.append(("load_model", directory, epoch))

    def test(self, split=None):
        CliProbeTrainer.calls.append(("test",))

    def evaluate_saved_model(self, directory, epoch=None):  # the engine's flow: load, then evaluate
        self.load_model(directory, epoch)
        self.test()

    def train(self):
        CliProbeTrainer.calls.append(("train",))


TRAINER_REGISTRY.register(CliProbeTrainer, force=True)


@pytest.fixture(autouse=True)
def _reset_probe():
    CliProbeTrainer.calls = []
    yield
    from dassl.utils import close_logger

    close_logger()


def _args(tmp_path, *extra):
    return train.build_parser().parse_args(
        ["--trainer", "CliProbeTrainer", "--output-dir", str(tmp_path / "out"), *extra]
    )


def test_flag_values_keep_seed_zero_and_skip_empty_flags(tmp_path):
    args = _args(tmp_path, "--seed", "0", "--transforms", "random_flip", "normalize")
    triples = {key: value for _, key, value in train.flag_values(args)}
    assert triples["SEED"] == 0
    assert triples["INPUT.TRANSFORMS"] == ["random_flip", "normalize"]
    assert "DATASET.ROOT" not in triples and "RESUME" not in triples


def test_setup_cfg_merges_files_flags_and_opts(tmp_path):
    method = tmp_path / "m.yaml"
    method.write_text("OPTIM:\n  MAX_EPOCH: 3\nDATASET:\n  ROOT: from_yaml\n")
    resume_dir = tmp_path / "old_run"
    resume_dir.mkdir()
    args = _args(tmp_path, "--config-file", str(method), "--root", "from_flag", "--seed", "0",
                 "--resume", str(resume_dir), "OPTIM.MAX_EPOCH", "5")
    cfg = train.setup_cfg(args)
    assert cfg.is_frozen()
    assert (cfg.DATASET.ROOT, cfg.SEED, cfg.RESUME, cfg.OPTIM.MAX_EPOCH) == ("from_flag", 0, str(resume_dir), 5)
    assert cfg.TRAINER.NAME == "CliProbeTrainer"


def test_main_seeds_logs_and_trains(tmp_path, capsys):
    train.main(_args(tmp_path, "--seed", "0"))
    assert CliProbeTrainer.calls == [("init", 0, ""), ("train",)]
    out = capsys.readouterr().out
    assert out.startswith("Setting fixed seed: 0\n")
    log = (tmp_path / "out" / "log.txt").read_text()
    assert "Setting fixed seed" not in log  # printed before the logger exists, as Dassl
    for banner in ("** Arguments **", "** Config **", "** System info **", "seed: 0", "  MAX_EPOCH: 10"):
        assert banner in log


def test_main_eval_only_and_no_train(tmp_path):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    train.main(_args(tmp_path, "--eval-only", "--model-dir", str(model_dir), "--load-epoch", "4"))
    assert CliProbeTrainer.calls[1:] == [("load_model", str(model_dir), 4), ("test",)]
    CliProbeTrainer.calls = []
    train.main(_args(tmp_path, "--no-train"))
    assert [c[0] for c in CliProbeTrainer.calls] == ["init"]


@pytest.mark.parametrize(
    "extra, expected",
    [
        (["--config-file", "missing.yaml"], ["--config-file", "missing.yaml"]),
        (["--resume", "no_such_dir"], ["--resume", "no_such_dir"]),
        (["TRAINER.PROMPTKD.KD_WEIGHT", "1000"], ["TRAINER.PROMPTKD.KD_WEIGHT", "1000.0"]),
        (["OPTIM.NOPE", "1"], ["OPTIM.NOPE", "command-line opts"]),
    ],
)
def test_cli_user_errors_exit_2_with_one_line(tmp_path, capsys, extra, expected):
    argv = ["--trainer", "CliProbeTrainer", "--output-dir", str(tmp_path / "out"), *extra]
    assert train.cli(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("Error: ") and "Traceback" not in err
    for fragment in expected:
        assert fragment in err
    assert CliProbeTrainer.calls == []


def test_cli_unknown_trainer_lists_names(tmp_path, capsys):
    assert train.cli(["--trainer", "CliProbeTrainr", "--output-dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "CliProbeTrainr" in err and "CliProbeTrainer" in err
