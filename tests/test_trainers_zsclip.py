"""ZeroshotCLIP on a tiny fake dataset: the dataset template, the logits and the zeroshot.json."""
import json

import pytest
import torch
import torch.nn.functional as F


def test_zeroshot_clip_eval_only(tmp_path):
    import clip
    import train
    from tests.trainers_tiny_setup import make_world

    world = make_world(tmp_path, make_teacher=False)
    out = tmp_path / "zs"
    args = train.build_parser().parse_args([
        "--root", world["root"], "--trainer", "ZeroshotCLIP",
        "--dataset-config-file", "configs/datasets/oxford_pets.yaml",
        "--config-file", "configs/trainers/CoOp/vit_b16.yaml", "--output-dir", str(out), "--eval-only",
        "DATASET.SUBSAMPLE_CLASSES", "new", "MODEL.BACKBONE.WEIGHTS", world["weights"][0],
        "INPUT.SIZE", "(32, 32)", "DATALOADER.NUM_WORKERS", "0", "USE_CUDA", "False",
    ])
    trainer = train.main(args)
    classnames = trainer.dm.dataset.classnames
    assert len(classnames) == 2  # 5 classes -> new = the last 2

    prompts = [f"a photo of a {c.replace('_', ' ')}, a type of pet." for c in classnames]
    assert f"Prompts: {prompts}" in (out / "log.txt").read_text()
    model = clip.build_model(clip.load_state_dict(world["weights"][0])).eval()
    with torch.no_grad():
        text = F.normalize(model.encode_text(clip.tokenize(prompts)), dim=-1)
    assert torch.allclose(trainer.text_features, text, atol=1e-5)

    image = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        expected = model.logit_scale.exp() * F.normalize(model.encode_image(image), dim=-1) @ text.t()
    assert torch.allclose(trainer.model_inference(image), expected, atol=1e-4)

    record = json.loads((out / "zeroshot.json").read_text())
    assert record["trainer"] == "ZeroshotCLIP" and record["dataset"] == "OxfordPets"
    assert record["subsample"] == "new"
    assert 0.0 <= record["accuracy"] <= 100.0
    assert f"* accuracy: {record['accuracy']:.1f}%" in (out / "log.txt").read_text()


def test_zeroshot_clip_refuses_to_train(tmp_path):
    import train
    from dassl.utils import UserError
    from tests.trainers_tiny_setup import make_world

    world = make_world(tmp_path, make_teacher=False)
    args = train.build_parser().parse_args([
        "--root", world["root"], "--trainer", "ZeroshotCLIP",
        "--dataset-config-file", "configs/datasets/oxford_pets.yaml",
        "--config-file", "configs/trainers/CoOp/vit_b16.yaml", "--output-dir", str(tmp_path / "o"),
        "MODEL.BACKBONE.WEIGHTS", world["weights"][0], "INPUT.SIZE", "(32, 32)",
        "DATALOADER.NUM_WORKERS", "0", "USE_CUDA", "False",
    ])
    with pytest.raises(UserError, match="--eval-only"):
        train.main(args)
