"""Optimiser construction and the exact per-epoch learning rates of the schedulers."""
import io
import math
import warnings

import pytest
import torch
import torch.nn as nn

from dassl.config import get_cfg_default
from dassl.optim import build_lr_scheduler, build_optimizer

# Dassl's delayed cosine (docs/compatibility.md): PromptKD / PromptSRC ViT-L/14 teacher, E = 20, lr = 0.005
# (4 significant digits).
TABLE_E20_LR0005 = [
    1.0000e-05, 5.0000e-03, 4.9692e-03, 4.8776e-03, 4.7275e-03, 4.5225e-03, 4.2678e-03,
    3.9695e-03, 3.6350e-03, 3.2725e-03, 2.8911e-03, 2.5000e-03, 2.1089e-03, 1.7275e-03,
    1.3650e-03, 1.0305e-03, 7.3223e-04, 4.7746e-04, 2.7248e-04, 1.2236e-04,
]


def _optim_cfg(**overrides):
    cfg = get_cfg_default()
    for key, value in overrides.items():
        setattr(cfg.OPTIM, key, value)
    return cfg.OPTIM


def _prompt_cfg(lr=0.005, epochs=20, **overrides):
    """The optimisation block every PromptKD-family YAML uses."""
    settings = dict(NAME="sgd", LR=lr, MAX_EPOCH=epochs, LR_SCHEDULER="cosine", WARMUP_EPOCH=1,
                    WARMUP_TYPE="constant", WARMUP_CONS_LR=1e-5)
    settings.update(overrides)
    return _optim_cfg(**settings)


def _epoch_lrs(optim_cfg, epochs):
    """The lr used during each epoch when the scheduler steps once at the end of every epoch."""
    model = nn.Linear(2, 2)
    optimizer = build_optimizer(model, optim_cfg)
    scheduler = build_lr_scheduler(optimizer, optim_cfg)
    lrs = []
    for _ in range(epochs):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


def test_promptkd_schedule_matches_table_and_closed_form():
    lrs = _epoch_lrs(_prompt_cfg(), 20)
    for e, (lr, expected) in enumerate(zip(lrs, TABLE_E20_LR0005)):
        assert f"{lr:.4e}" == f"{expected:.4e}", e
        closed = 1e-5 if e == 0 else 0.005 * (1 + math.cos(math.pi * (e - 1) / 20)) / 2
        assert lr == pytest.approx(closed, rel=1e-12, abs=0)
    assert lrs[1] == 0.005


@pytest.mark.parametrize(
    "lr, epochs, head, tail",
    [
        (0.0025, 20, [1.0000e-05, 2.5000e-03, 2.4846e-03, 2.4388e-03], [1.3624e-04, 6.1179e-05]),
        (0.002, 50, [1.0000e-05, 2.0000e-03, 1.9980e-03, 1.9921e-03], [1.7713e-05, 7.8853e-06]),
        (0.0035, 5, [1.0000e-05, 3.5000e-03, 3.1658e-03, 2.2908e-03], [2.2908e-03, 1.2092e-03]),
    ],
)
def test_other_published_schedules(lr, epochs, head, tail):
    lrs = _epoch_lrs(_prompt_cfg(lr=lr, epochs=epochs), epochs)
    assert [f"{x:.4e}" for x in lrs[: len(head)]] == [f"{x:.4e}" for x in head]
    assert [f"{x:.4e}" for x in lrs[-len(tail):]] == [f"{x:.4e}" for x in tail]


def test_linear_warmup():
    cfg = _optim_cfg(NAME="sgd", LR=0.1, MAX_EPOCH=10, LR_SCHEDULER="cosine", WARMUP_EPOCH=3,
                     WARMUP_TYPE="linear", WARMUP_MIN_LR=1e-4)
    lrs = _epoch_lrs(cfg, 6)
    assert lrs[0] == pytest.approx(1e-4)
    assert lrs[1] == pytest.approx(0.1 * 1 / 3)
    assert lrs[2] == pytest.approx(0.1 * 2 / 3)
    # Hand-over at the end of warm-up: the successor's lr (still the base lr), then its cosine.
    assert lrs[3] == pytest.approx(0.1)
    assert lrs[4] == pytest.approx(0.1 * (1 + math.cos(math.pi / 10)) / 2)


def test_warmup_without_recount_skips_the_first_cosine_epochs():
    cfg = _prompt_cfg(lr=0.01, epochs=10, WARMUP_EPOCH=2, WARMUP_RECOUNT=False)
    lrs = _epoch_lrs(cfg, 5)
    assert lrs[:2] == [1e-5, 1e-5]
    assert lrs[2] == pytest.approx(0.01)
    # The successor's counter started at 2, so its next value is the closed form at epoch 3.
    assert lrs[3] == pytest.approx(0.01 * (1 + math.cos(3 * math.pi / 10)) / (1 + math.cos(2 * math.pi / 10)))


def test_single_and_multi_step():
    single = _epoch_lrs(_optim_cfg(NAME="sgd", LR=1.0, LR_SCHEDULER="single_step", STEPSIZE=(3,), GAMMA=0.5), 7)
    assert single == pytest.approx([1, 1, 1, 0.5, 0.5, 0.5, 0.25])
    whole_run = _epoch_lrs(_optim_cfg(NAME="sgd", LR=1.0, LR_SCHEDULER="single_step", MAX_EPOCH=4), 5)
    assert whole_run == pytest.approx([1, 1, 1, 1, 0.1])  # STEPSIZE -1 -> MAX_EPOCH
    multi = _epoch_lrs(_optim_cfg(NAME="sgd", LR=1.0, LR_SCHEDULER="multi_step", STEPSIZE=(2, 4), GAMMA=0.1), 5)
    assert multi == pytest.approx([1, 1, 0.1, 0.1, 0.01])


def _roundtrip(state):
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


@pytest.mark.parametrize("scheduler_name, warmup", [("cosine", "constant"), ("multi_step", "linear"), ("single_step", None)])
def test_scheduler_state_roundtrip_weights_only_and_resume(scheduler_name, warmup):
    extra = {"WARMUP_EPOCH": 2, "WARMUP_TYPE": warmup} if warmup else {}
    cfg = _optim_cfg(NAME="sgd", LR=0.1, MAX_EPOCH=8, LR_SCHEDULER=scheduler_name, STEPSIZE=(3, 5), **extra)
    if scheduler_name == "single_step":
        cfg.STEPSIZE = (3,)
    model = nn.Linear(2, 2)
    optimizer = build_optimizer(model, cfg)
    scheduler = build_lr_scheduler(optimizer, cfg)
    for _ in range(4):
        optimizer.step()
        scheduler.step()
    saved_sched = _roundtrip(scheduler.state_dict())
    saved_optim = _roundtrip(optimizer.state_dict())
    expected = []
    for _ in range(4):
        expected.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()

    fresh_optimizer = build_optimizer(nn.Linear(2, 2), cfg)
    fresh_scheduler = build_lr_scheduler(fresh_optimizer, cfg)
    fresh_optimizer.load_state_dict(saved_optim)
    fresh_scheduler.load_state_dict(saved_sched)
    resumed = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(4):
            resumed.append(fresh_optimizer.param_groups[0]["lr"])
            fresh_optimizer.step()
            fresh_scheduler.step()
    assert resumed == expected


def test_sgd_defaults_match_dassl():
    optimizer = build_optimizer(nn.Linear(2, 2), _prompt_cfg())
    group = optimizer.param_groups[0]
    assert isinstance(optimizer, torch.optim.SGD)
    assert (group["momentum"], group["weight_decay"], group["dampening"], group["nesterov"]) == (0.9, 5e-4, 0, False)


@pytest.mark.parametrize("name, cls", [("adam", torch.optim.Adam), ("amsgrad", torch.optim.Adam),
                                       ("adamw", torch.optim.AdamW), ("rmsprop", torch.optim.RMSprop),
                                       ("radam", torch.optim.RAdam)])
def test_other_optimizers(name, cls):
    optimizer = build_optimizer(nn.Linear(2, 2), _optim_cfg(NAME=name, LR=0.01))
    assert isinstance(optimizer, cls)
    assert optimizer.param_groups[0]["lr"] == 0.01
    if name == "amsgrad":
        assert optimizer.param_groups[0]["amsgrad"] is True


def test_staged_lr_and_param_groups():
    model = nn.Sequential()
    model.add_module("backbone", nn.Linear(2, 2))
    model.add_module("head", nn.Linear(2, 3))
    staged = build_optimizer(model, _optim_cfg(NAME="sgd", LR=0.1, STAGED_LR=True, NEW_LAYERS=("head",)))
    assert [g["lr"] for g in staged.param_groups] == pytest.approx([0.01, 0.1])
    assert staged.param_groups[1]["params"][0] is model.head.weight

    groups = [{"params": model.backbone.parameters(), "lr": 0.5}, {"params": model.head.parameters()}]
    with pytest.warns(UserWarning, match="STAGED_LR"):
        explicit = build_optimizer(model, _optim_cfg(NAME="sgd", LR=0.1, STAGED_LR=True), param_groups=groups)
    assert [g["lr"] for g in explicit.param_groups] == [0.5, 0.1]


def test_unknown_names_are_errors():
    with pytest.raises(ValueError, match="OPTIM.NAME"):
        build_optimizer(nn.Linear(2, 2), _optim_cfg(NAME="lion"))
    optimizer = build_optimizer(nn.Linear(2, 2), _optim_cfg(NAME="sgd"))
    with pytest.raises(ValueError, match="OPTIM.LR_SCHEDULER"):
        build_lr_scheduler(optimizer, _optim_cfg(LR_SCHEDULER="poly"))
    with pytest.raises(ValueError, match="OPTIM.WARMUP_TYPE"):
        build_lr_scheduler(optimizer, _optim_cfg(WARMUP_EPOCH=1, WARMUP_TYPE="exp"))


def test_warmup_scheduler_loads_a_legacy_dassl_state():
    """Original Dassl checkpoints hold the successor *object*; load_checkpoint turns it into a dict
    of its attributes (including a stand-in for the optimizer, which must be ignored)."""
    cfg = _prompt_cfg(lr=0.01, epochs=10)
    optimizer = build_optimizer(nn.Linear(2, 2), cfg)
    scheduler = build_lr_scheduler(optimizer, cfg)
    for _ in range(3):
        optimizer.step()
        scheduler.step()
    legacy = scheduler.state_dict()
    legacy["successor"] = dict(legacy["successor"], optimizer={"defaults": {}}, verbose=False)

    fresh_optimizer = build_optimizer(nn.Linear(2, 2), cfg)
    fresh = build_lr_scheduler(fresh_optimizer, cfg)
    fresh.load_state_dict(legacy)
    assert fresh.successor.optimizer is fresh_optimizer
    assert fresh.successor.last_epoch == scheduler.successor.last_epoch == 2
    assert fresh.get_last_lr() == scheduler.get_last_lr()
