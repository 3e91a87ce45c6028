"""KDPL and KDPL_RSM: the symmetric-KL loss and the class-agnostic choice of classes by hand, the class-list
formats, the teacher (student's logit scale, dataset template), a step by hand with labels that do not matter,
one-epoch runs of every variant with results.json and their checkpoints reloaded for the new classes, and
KDPL_RSM with omega 0 equal to KDPL."""
from __future__ import annotations

import contextlib
import math
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

import clip
import train
from dassl.utils import UserError
from tests.supervised_tiny_setup import check_base2new_results, new_class_logits, read_json, saved_state, train_step
from tests.trainers_tiny_setup import make_world
from trainers.config import default_config
from trainers.kdpl import KDPL_HOSTS, symmetric_kl
from trainers.kdpl_classes import batch_class_probabilities, effective_k, read_class_list, top_classes
from trainers.kdpl_teacher import check_head_width

CONFIGS = {"CoOp": "vit_b16_ep50_ctxv1.yaml", "CoCoOp": "vit_b16_c4_ep10_batch1_ctxv1.yaml",
           "IVLP": "vit_b16_c2_ep20_batch4_4+4ctx.yaml", "MaPLe": "vit_b16_c2_ep5_batch4_2ctx.yaml"}
FOLDERS = {"CoOp": "prompt_learner", "CoCoOp": "prompt_learner", "IVLP": "VLPromptLearner",
           "MaPLe": "MultiModalPromptLearner"}
SMALL = {"IVLP": ["TRAINER.IVLP.PROMPT_DEPTH_VISION", "2", "TRAINER.IVLP.PROMPT_DEPTH_TEXT", "2"],
         "MaPLe": ["TRAINER.MAPLE.PROMPT_DEPTH", "2"]}
CLASS_LIST = ["abyssinian", "beagle", "red car", "blue sky", "oak tree", "small house", "sparrow", "sports car",
              "tabby cat"]
K_MAX = 4
TEACHER_LOGIT_SCALE = math.log(10.0)  # the teacher's own scale; KDPL must use the student's (100)
# (trainer, host, class-agnostic): every variant trains one epoch once (cached for the module)
VARIANTS = [("KDPL", "CoOp", False), ("KDPL", "CoOp", True), ("KDPL", "IVLP", False), ("KDPL", "IVLP", True),
            ("KDPL", "MaPLe", False), ("KDPL", "CoCoOp", True), ("KDPL_RSM", "CoOp", True),
            ("KDPL_RSM", "IVLP", False), ("KDPL_RSM", "MaPLe", True)]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("kdpl")
    world = make_world(root, make_teacher=False)
    teacher = world["weights"][1]
    state = torch.load(teacher, weights_only=True)
    state["logit_scale"] = torch.tensor(TEACHER_LOGIT_SCALE)
    torch.save(state, teacher)
    names = root / "names.txt"
    names.write_text("\n".join(CLASS_LIST) + "\n")
    world.update(class_list=str(names), dir=root)
    return world


def run(world, trainer: str, host: str, output_dir: Path, class_agnostic: bool = False, opts=(), model_dir=None,
        subsample: str = "base"):
    """train.py in-process: one epoch on the tiny world, or with ``model_dir`` an evaluation-only run."""
    folder = "KDPL_RSM" if trainer.endswith("RSM") else "KDPL"
    argv = ["--root", world["root"], "--seed", "1", "--trainer", trainer,
            "--dataset-config-file", "configs/datasets/oxford_pets.yaml",
            "--config-file", os.path.join("configs", "trainers", folder, CONFIGS[host]),
            "--output-dir", str(output_dir)]
    if model_dir is not None:
        argv += ["--eval-only", "--model-dir", str(model_dir), "--load-epoch", "1"]
    argv += ["DATASET.NUM_SHOTS", "2", "DATASET.SUBSAMPLE_CLASSES", subsample,
             "MODEL.BACKBONE.WEIGHTS", world["weights"][0], "TRAINER.KDPL.TEACHER_WEIGHTS", world["weights"][1],
             "TRAINER.KDPL.HOST", host, "INPUT.SIZE", "(32, 32)", "OPTIM.MAX_EPOCH", "1", "OPTIM.WARMUP_EPOCH", "-1",
             "OPTIM.LR", "0.01", "DATALOADER.NUM_WORKERS", "0", "DATALOADER.TRAIN_X.BATCH_SIZE", "2",
             "DATALOADER.TEST.BATCH_SIZE", "8", "USE_CUDA", "False", "TRAINER.RSM.DIM", "8"]
    if class_agnostic:
        argv += ["TRAINER.KDPL.CLASS_AGNOSTIC", "True", "TRAINER.KDPL.CLASS_LIST", world["class_list"],
                 "TRAINER.KDPL.K_MAX", str(K_MAX)]
    argv += SMALL.get(host, []) + list(opts)
    return train.main(train.build_parser().parse_args(argv))


@pytest.fixture(scope="module")
def trained(world):
    """``trained(trainer, host, class_agnostic)`` -> (trainer object, run folder), each variant trained once."""
    cache = {}

    def get(trainer: str, host: str, class_agnostic: bool):
        key = (trainer, host, class_agnostic)
        if key not in cache:
            out = world["dir"] / f"{trainer}_{host}_{'ca' if class_agnostic else 'aware'}"
            cache[key] = (run(world, trainer, host, out, class_agnostic), out)
        return cache[key]

    return get


@contextlib.contextmanager
def restored_after(trainer):
    """Run steps in a test without changing the trainer for the other tests (dataset classes back first)."""
    state = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    optim_state = trainer.optim.state_dict()
    try:
        yield trainer
    finally:
        trainer.use_dataset_classes()
        trainer.model.load_state_dict(state)
        trainer.optim.load_state_dict(optim_state)


def softmax_rows(z: torch.Tensor) -> list:
    """Row-wise softmax written out with math.exp (the hand computation of the tests)."""
    rows = []
    for row in z.tolist():
        top = max(row)
        e = [math.exp(v - top) for v in row]
        rows.append([v / sum(e) for v in e])
    return rows


def symmetric_kl_by_hand(student: torch.Tensor, teacher: torch.Tensor) -> float:
    p_s, p_t = softmax_rows(student), softmax_rows(teacher)
    forward = sum(t * (math.log(t) - math.log(s)) for ps, pt in zip(p_s, p_t) for s, t in zip(ps, pt))
    reverse = sum(s * (math.log(s) - math.log(t)) for ps, pt in zip(p_s, p_t) for s, t in zip(ps, pt))
    return 0.5 * forward / len(p_s) + 0.5 * reverse / len(p_s)


# ---------------------------------------------------------------------------------------------- loss and selection
def test_symmetric_kl_matches_its_formula_and_trains_through_both_terms():
    student = torch.tensor([[2.0, -1.0, 0.5, 0.0], [0.3, 0.2, -0.7, 1.5], [1.0, 1.0, 1.0, -3.0]], requires_grad=True)
    teacher = torch.tensor([[1.0, 0.0, -2.0, 0.5], [-0.5, 2.5, 0.1, 0.0], [0.0, 3.0, -1.0, 0.2]])
    loss, forward, reverse = symmetric_kl(student, teacher)
    assert loss.item() == pytest.approx(symmetric_kl_by_hand(student.detach(), teacher), rel=1e-6)
    assert loss.item() == pytest.approx(0.5 * forward.item() + 0.5 * reverse.item(), rel=1e-6)
    assert forward.item() != pytest.approx(reverse.item(), rel=1e-3)  # the two directions differ
    loss.backward()
    # gradient of the written-out formula, with the student inside both KL terms
    s = student.detach().clone().requires_grad_(True)
    p_s, p_t = s.exp() / s.exp().sum(1, keepdim=True), teacher.exp() / teacher.exp().sum(1, keepdim=True)
    by_hand = 0.5 * (p_t * (p_t.log() - p_s.log())).sum() / 3 + 0.5 * (p_s * (p_s.log() - p_t.log())).sum() / 3
    by_hand.backward()
    assert torch.allclose(student.grad, s.grad, atol=1e-6)
    with pytest.raises(ValueError, match="shape"):
        symmetric_kl(student, teacher[:, :3])


def test_class_agnostic_choice_by_hand():
    # 3 images, 5 classes: averaging the softmax over the batch, not the logits, decides
    logits = torch.tensor([[9.0, 8.8, 0.0, 0.0, 0.0], [0.0, 0.0, 9.0, 0.0, 0.0], [0.0, 0.0, 0.0, 3.0, 2.8]])
    probs = softmax_rows(logits)
    mean = [sum(row[c] for row in probs) / len(probs) for c in range(5)]
    expected = sorted(range(5), key=lambda c: -mean[c])[:3]
    chosen = top_classes(batch_class_probabilities(logits), 3).tolist()
    assert chosen == expected
    mean_logits = logits.mean(0)
    assert sorted(range(5), key=lambda c: -mean_logits[c].item())[:3] != expected  # a different rule would differ
    assert top_classes(batch_class_probabilities(logits), 9).tolist() == sorted(range(5), key=lambda c: -mean[c])
    assert effective_k(1000, 9) == 9 and effective_k(4, 9) == 4
    with pytest.raises(UserError, match="K_MAX"):
        effective_k(0, 9)


def test_class_list_formats(tmp_path):
    text = tmp_path / "names.txt"
    text.write_text("tabby cat\n\nred_car\ntabby cat\n  oak tree  \n")
    assert read_class_list(str(text)) == ["tabby cat", "red_car", "oak tree"]  # blank and repeated lines dropped
    kdpl_csv = tmp_path / "classnames_dictionay.csv"
    kdpl_csv.write_text('ClassName\ntench\n"lamp, desk"\ngoldfish\n')
    assert read_class_list(str(kdpl_csv)) == ["tench", "lamp, desk", "goldfish"]
    imagenet = tmp_path / "classnames.txt"
    imagenet.write_text("n01440764 tench\nn01443537 goldfish\nn01484850 great white shark\n")
    assert read_class_list(str(imagenet)) == ["tench", "goldfish", "great white shark"]
    other_csv = tmp_path / "other.csv"
    other_csv.write_text("name\ncat\n")
    for path, match in ((str(other_csv), "ClassName"), ("", "CLASS_LIST"), (str(tmp_path / "none.txt"), "not found")):
        with pytest.raises(UserError, match=match):
            read_class_list(path)


def test_teacher_with_wide_attention_heads_is_refused():
    vit_h = SimpleNamespace(visual=SimpleNamespace(conv1=SimpleNamespace(weight=torch.empty(1280, 3, 14, 14))))
    with pytest.raises(UserError, match="80-wide attention heads"):
        check_head_width(vit_h, "dfn5b.bin")
    vit_l = SimpleNamespace(visual=SimpleNamespace(conv1=SimpleNamespace(weight=torch.empty(1024, 3, 14, 14))))
    check_head_width(vit_l, "ViT-L/14")


# ---------------------------------------------------------------------------------------------- teacher and step
def teacher_logits_by_hand(world, trainer, image: torch.Tensor, prompts) -> torch.Tensor:
    """The teacher's logits from a freshly built CLIP: student's exp(logit_scale) x cosine similarities."""
    teacher = clip.build_model(clip.load_state_dict(world["weights"][1])).eval()
    assert teacher.logit_scale.exp().item() == pytest.approx(10.0)
    with torch.no_grad():
        text = F.normalize(teacher.encode_text(clip.tokenize(prompts, context_length=teacher.context_length)), dim=-1)
        img = F.normalize(teacher.encode_image(image), dim=-1)
    scale = trainer.model.logit_scale.exp().item()
    assert scale == pytest.approx(100.0)
    return scale * img @ text.t()


@pytest.mark.parametrize("host", ["CoOp", "IVLP"])
def test_class_aware_step_by_hand_ignores_labels(world, trained, host):
    trainer, _ = trained("KDPL", host, False)
    names = [n.replace("_", " ") for n in trainer.classnames]
    prompts = [f"a photo of a {n}, a type of pet." for n in names]  # the dataset's template
    assert trainer.kdpl_teacher().prompts == prompts
    assert [name for name, _ in trainer.kdpl_teacher().named_children()] == ["visual"]  # text tower released
    torch.manual_seed(7)
    image = torch.randn(4, 3, 32, 32)
    teacher = teacher_logits_by_hand(world, trainer, image, prompts)
    assert torch.allclose(trainer.teacher_logits(image), teacher, atol=1e-4)
    trainer.set_model_mode("train")
    with torch.no_grad():
        student = trainer.model(image)
    expected = symmetric_kl_by_hand(student, teacher)
    updated = []
    for label in (torch.tensor([0, 1, 2, 0]), torch.tensor([2, 2, 1, 1])):
        with restored_after(trainer):
            summary = train_step(trainer, image, label)
            updated.append({n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad})
        assert summary["loss"] == pytest.approx(expected, rel=1e-4)
    assert updated[0].keys() and all(torch.equal(updated[0][n], updated[1][n]) for n in updated[0])


def test_class_agnostic_step_distils_over_the_teachers_top_classes(world, trained):
    trainer, _ = trained("KDPL", "CoOp", True)
    prompts = [f"a photo of a {n}." for n in CLASS_LIST]
    assert trainer.kdpl_teacher().prompts == prompts and trainer.k == K_MAX
    torch.manual_seed(8)
    image = torch.randn(3, 3, 32, 32)
    teacher = teacher_logits_by_hand(world, trainer, image, prompts)
    probs = softmax_rows(teacher)
    mean = [sum(row[c] for row in probs) / 3 for c in range(len(CLASS_LIST))]
    chosen = sorted(range(len(CLASS_LIST)), key=lambda c: -mean[c])[:K_MAX]
    chosen_names = [CLASS_LIST[c] for c in chosen]
    with restored_after(trainer):
        trainer.set_model_mode("train")
        trainer.model.set_classnames(chosen_names)
        with torch.no_grad():
            student = trainer.model(image)
        trainer.use_dataset_classes()
        summary = train_step(trainer, image, torch.zeros(3, dtype=torch.long))
        assert trainer.model.prompt_learner.classnames == chosen_names
        assert summary["loss"] == pytest.approx(symmetric_kl_by_hand(student, teacher[:, chosen]), rel=1e-4)
        trainer.test("test")  # evaluation scores the dataset's classes again
        assert trainer.model.prompt_learner.classnames == trainer.classnames


def test_rsm_term_of_a_step(trained):
    trainer, _ = trained("KDPL_RSM", "IVLP", False)
    model, rsm = trainer.model, trainer.model.rsm
    torch.manual_seed(9)
    image = torch.randn(4, 3, 32, 32)
    trainer.set_model_mode("train")
    with torch.no_grad():
        image_features = model.encode_image(image)
        text_features = model.class_features()
        kd = symmetric_kl_by_hand(model(image), trainer.teacher_logits(image))
        entropy = rsm(image_features, text_features).item()  # text rows: the student's prompted text features
    with restored_after(trainer):
        summary = train_step(trainer, image, torch.zeros(4, dtype=torch.long))
        assert rsm.phi_v[0].weight.grad.abs().sum() > 0 and rsm.phi_w[0].weight.grad.abs().sum() > 0
        assert model.text_encoder.transformer.resblocks[1].VPT_shallow.grad.abs().sum() > 0
    assert summary["kd"] == pytest.approx(kd, rel=1e-4)
    assert summary["H"] == pytest.approx(entropy, rel=1e-5)
    assert summary["rsm"] == pytest.approx(trainer.rsm_term.weight * entropy, rel=1e-5)
    assert summary["loss"] == pytest.approx(summary["kd"] + summary["rsm"], rel=1e-5)


# ---------------------------------------------------------------------------------------------- one-epoch runs
@pytest.mark.parametrize("trainer_name,host,class_agnostic", VARIANTS)
def test_one_epoch_run_writes_results_and_its_checkpoint_reloads(world, trained, capsys, trainer_name, host,
                                                                 class_agnostic):
    trainer, out = trained(trainer_name, host, class_agnostic)
    record = check_base2new_results(out, trainer_name)
    assert (record["host"], record["class_agnostic"], record["teacher"]) == (host, class_agnostic, world["weights"][1])
    assert type(trainer).__name__ == f"{host}_{trainer_name}"  # the host class TRAINER.KDPL.HOST picked
    state = saved_state(out, FOLDERS[host])
    prefix = "" if FOLDERS[host] == "prompt_learner" else "prompt_learner."
    assert state[f"{prefix}token_prefix"].shape[0] == 3  # the dataset's base classes, also after class-agnostic steps
    assert any(key.startswith("rsm.") for key in state) == trainer_name.endswith("RSM")
    trained_names = [n for n, p in trainer.model.named_parameters() if p.requires_grad]
    assert trained_names and all(n.startswith("prompt_learner.") or "VPT" in n or n.startswith("rsm.")
                                 for n in trained_names)
    log = (out / "log.txt").read_text()
    assert "kl_fwd" in log and ("rsm" in log) == trainer_name.endswith("RSM")

    capsys.readouterr()
    evaluated = run(world, trainer_name, host, out.with_name(out.name + "_eval_new"), class_agnostic,
                    model_dir=out, subsample="new")
    printed = capsys.readouterr().out
    assert "WARNING" not in printed and "Loading Teacher CLIP" not in printed  # no teacher for an evaluation
    assert evaluated.teacher is None
    in_run, reloaded = new_class_logits(trainer, evaluated)
    assert torch.allclose(in_run, reloaded, atol=1e-5)
    eval_record = read_json(out.with_name(out.name + "_eval_new") / "results.json")
    assert eval_record["protocol"] == "evaluation" and eval_record["best"]["accuracy"] == record["last"]["new"]


@pytest.mark.parametrize("host,class_agnostic", [("IVLP", False), ("CoOp", True)])
def test_rsm_with_weight_zero_is_kdpl(world, trained, host, class_agnostic):
    plain, plain_out = trained("KDPL", host, class_agnostic)
    out = world["dir"] / f"rsm0_{host}"
    with_rsm = run(world, "KDPL_RSM", host, out, class_agnostic, opts=["TRAINER.RSM.WEIGHT", "0.0"])
    weights = {k: v for k, v in with_rsm.model.state_dict().items() if ".rsm." not in f".{k}"}
    assert weights.keys() == plain.model.state_dict().keys()
    assert all(torch.equal(v, plain.model.state_dict()[k]) for k, v in weights.items())
    assert any(k.startswith("rsm.") or ".rsm." in k for k in with_rsm.model.state_dict())
    ours, theirs = read_json(out / "results.json"), read_json(plain_out / "results.json")
    assert (ours["best"], ours["last"]) == (theirs["best"], theirs["last"])


def test_original_trainer_name_with_a_published_config(world, tmp_path):
    argv = ["--root", world["root"], "--seed", "2", "--trainer", "CoOp_KDPL",
            "--dataset-config-file", "configs/datasets/oxford_pets.yaml",
            "--config-file", "configs/trainers/KDPL/vit_b32_ctxv1.yaml", "--output-dir", str(tmp_path / "run"),
            "DATASET.NUM_SHOTS", "1", "DATASET.SUBSAMPLE_CLASSES", "base",
            "MODEL.BACKBONE.WEIGHTS", world["weights"][0],
            "TRAINER.KDPL.TEACHER_WEIGHTS", world["weights"][1], "INPUT.SIZE", "(32, 32)", "OPTIM.MAX_EPOCH", "1",
            "DATALOADER.NUM_WORKERS", "0", "USE_CUDA", "False"]
    trainer = train.main(train.build_parser().parse_args(argv))
    assert type(trainer).__name__ == "CoOp_KDPL"
    assert read_json(tmp_path / "run" / "results.json")["trainer"] == "CoOp_KDPL"


def test_every_kdpl_config_merges():
    folder = Path("configs/trainers")
    files = sorted(folder.glob("KDPL/*.yaml")) + sorted(folder.glob("KDPL_RSM/*.yaml"))
    assert len(files) == 12
    for path in files:
        cfg = default_config()
        cfg.merge_from_file(str(path))
        assert cfg.TRAINER.KDPL.HOST in KDPL_HOSTS and cfg.TRAINER.KDPL.TEACHER == "ViT-L/14", path
        assert (cfg.TRAINER.RSM.WEIGHT == 5.0) == (path.parent.name == "KDPL_RSM"), path


@pytest.mark.parametrize("trainer_name,host,opts,match", [
    ("KDPL_RSM", "CoCoOp", [], "text features differ per image"),
    ("KDPL", "VPT", [], "HOST must be one of"),
    ("KDPL_RSM", "IVLP", ["TRAINER.RSM.IMAGE_FEATURE", "backbone"], "IMAGE_FEATURE"),
    ("KDPL", "CoOp", ["TRAINER.KDPL.TEACHER_WEIGHTS", "", "TRAINER.KDPL.TEACHER", "ViT-H-14-quickgelu"],
     "not an OpenAI CLIP model name"),
    ("KDPL", "CoOp", ["TRAINER.KDPL.CLASS_AGNOSTIC", "True"], "CLASS_LIST"),
    ("KDPL", "CoOp", ["TRAINER.KDPL.CLASS_AGNOSTIC", "True", "TRAINER.KDPL.CLASS_LIST", "x.txt",
                      "TRAINER.COOP.CTX_INIT", "", "TRAINER.COOP.CSC", "True", "DATASET.SUBSAMPLE_CLASSES", "all"],
     "cannot score the class list"),
])
def test_configurations_that_cannot_run_stop_with_one_error(world, tmp_path, trainer_name, host, opts, match):
    with pytest.raises(UserError, match=match):
        run(world, trainer_name, "CoOp" if host in ("VPT", "CoCoOp") else host, tmp_path / "run",
            opts=["TRAINER.KDPL.HOST", host] + opts)


def test_a_fixed_host_name_refuses_another_host(world, tmp_path):
    argv = ["--root", world["root"], "--trainer", "MaPLe_KDPL", "--dataset-config-file",
            "configs/datasets/oxford_pets.yaml", "--config-file", "configs/trainers/KDPL/vit_b16_ep50_ctxv1.yaml",
            "--output-dir", str(tmp_path / "run"), "TRAINER.KDPL.HOST", "IVLP", "USE_CUDA", "False"]
    with pytest.raises(UserError, match="MaPLe student"):
        train.main(train.build_parser().parse_args(argv))
