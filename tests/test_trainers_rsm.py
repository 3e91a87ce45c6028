"""RSM: manifold entropy against hand computations, projections, RNG isolation."""
import math

import pytest
import torch

from trainers.rsm import RSM, make_generator, manifold_entropy, manifold_max_prob, manifold_scores


def test_manifold_entropy_matches_hand_computation():
    manifold = torch.tensor([[1.0, 3.0], [0.0, 0.0], [-2.0, 0.0]])
    # row means 2, 0, -1 -> softmax -> entropy, written out by hand
    weights = [math.exp(2.0), math.exp(0.0), math.exp(-1.0)]
    total = sum(weights)
    probs = [w / total for w in weights]
    expected_h = -sum(p * math.log(p) for p in probs)

    entropy, max_prob = manifold_entropy(manifold, return_max_prob=True)
    assert entropy.item() == pytest.approx(expected_h, rel=1e-6)
    assert max_prob.item() == pytest.approx(max(probs), rel=1e-6)
    assert manifold_max_prob(manifold).item() == pytest.approx(max(probs), rel=1e-6)
    assert manifold_scores(manifold).tolist() == [2.0, 0.0, -1.0]


def test_manifold_entropy_bounds_and_dtype():
    uniform = torch.ones(5, 3, dtype=torch.float16)
    entropy = manifold_entropy(uniform)
    assert entropy.dtype == torch.float32
    assert entropy.item() == pytest.approx(math.log(5), rel=1e-6)
    peaked = torch.tensor([[100.0], [0.0], [0.0]])
    assert manifold_entropy(peaked).item() < 1e-6
    with pytest.raises(ValueError, match="2-D"):
        manifold_entropy(torch.ones(3))


def test_rsm_forward_equals_entropy_of_stacked_projections():
    torch.manual_seed(0)
    rsm = RSM(image_dim=6, text_dim=5, dim=4, hidden=3, generator=make_generator(1))
    images, texts = torch.randn(2, 6), torch.randn(3, 5)
    manifold = rsm.manifold(images, texts)
    assert manifold.shape == (3 + 2, 4)
    # text rows first, computed by hand through the layers
    normed_texts = texts / texts.norm(dim=-1, keepdim=True)
    hand_text = rsm.phi_w[2](torch.relu(rsm.phi_w[0](normed_texts)))
    assert torch.allclose(manifold[:3], hand_text, atol=1e-6)
    normed_images = images / images.norm(dim=-1, keepdim=True)
    w0 = rsm.phi_v[0].weight.flatten(1)
    w2 = rsm.phi_v[2].weight.flatten(1)
    hand_image = torch.relu(normed_images @ w0.T + rsm.phi_v[0].bias) @ w2.T + rsm.phi_v[2].bias
    assert torch.allclose(manifold[3:], hand_image, atol=1e-6)
    assert rsm(images, texts).item() == pytest.approx(manifold_entropy(manifold).item(), rel=1e-6)
    entropy, _ = rsm.entropy_and_max_prob(images, texts)
    entropy.backward()
    assert rsm.phi_v[0].weight.grad is not None and rsm.phi_w[0].weight.grad is not None


def test_rsm_hidden_defaults_to_dim_and_shapes():
    rsm = RSM(image_dim=8, text_dim=7, dim=4, hidden=0, generator=make_generator(0))
    assert tuple(rsm.phi_v[0].weight.shape) == (4, 8, 1, 1)
    assert tuple(rsm.phi_v[2].weight.shape) == (4, 4, 1, 1)
    assert tuple(rsm.phi_w[0].weight.shape) == (4, 7)
    assert tuple(rsm.phi_w[2].weight.shape) == (4, 4)


def test_rsm_construction_leaves_global_rng_untouched_and_is_seeded():
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    first = RSM(image_dim=6, text_dim=5, dim=4, generator=make_generator(7))
    assert torch.equal(torch.rand(3), expected_next)
    second = RSM(image_dim=6, text_dim=5, dim=4, generator=make_generator(7))
    third = RSM(image_dim=6, text_dim=5, dim=4, generator=make_generator(8))
    for (name, a), (_, b), (_, c) in zip(
        first.state_dict().items(), second.state_dict().items(), third.state_dict().items()
    ):
        assert torch.equal(a, b), name
        assert not torch.equal(a, c), name


def _rsm_cfg(**values):
    from trainers.config import default_config

    cfg = default_config()
    cfg.SEED = 3
    for key, value in values.items():
        cfg.TRAINER.RSM[key] = value
    return cfg


@pytest.mark.parametrize("key,value,rule", [("WEIGHT", -1.0, ">= 0"), ("DIM", 0, "> 0"), ("HIDDEN", -2, ">= 0"),
                                            ("IMAGE_FEATURE", "pixels", "one of")])
def test_term_validates_each_key_once_naming_it(key, value, rule):
    from dassl.utils import UserError
    from trainers.rsm import RSMTerm

    with pytest.raises(UserError) as info:
        RSMTerm.from_cfg(_rsm_cfg(**{key: value}))
    assert f"TRAINER.RSM.{key}" in str(info.value) and rule in str(info.value)


def test_term_picks_the_configured_feature_and_is_skipped_at_weight_zero():
    from trainers.rsm import RSMTerm

    term = RSMTerm.from_cfg(_rsm_cfg(WEIGHT=2.0, DIM=4, IMAGE_FEATURE="backbone"))
    module = term.build_module(projected_dim=6, backbone_dim=3, text_dim=5)
    assert module.phi_v[0].in_channels == 3  # the backbone width, not the projected one
    backbone, projected, text = torch.randn(4, 3), torch.randn(4, 6), torch.randn(7, 5)
    loss, summary = term.loss(module, backbone, projected, text)
    assert torch.allclose(loss, 2.0 * module(backbone, text))
    assert set(summary) == {"rsm", "H", "max_p"} and not summary["H"].requires_grad
    off = RSMTerm.from_cfg(_rsm_cfg(WEIGHT=0.0))
    assert off.loss(off.build_module(6, 3, 5), backbone, projected, text) is None
    assert "off (WEIGHT 0" in off.describe()


def test_rsm_keys_on_a_trainer_without_rsm_are_reported():
    from trainers.rsm import describe_unused_keys

    assert describe_unused_keys(_rsm_cfg()) is None
    cfg = _rsm_cfg(WEIGHT=10.0)
    cfg.TRAINER.NAME = "PromptKD"
    note = describe_unused_keys(cfg)
    assert "WEIGHT=10.0" in note and "PromptKD has no RSM term" in note


# ----------------------------------------------------------------- opt-in variants (off by default)
def test_bounded_scores_are_the_cosine_with_the_ones_direction_and_ignore_row_norms():
    from trainers.rsm import bounded_scores

    manifold = torch.tensor([[3.0, 4.0], [1.0, -1.0], [-2.0, 0.0]])
    # cos(row, (1, 1)) by hand: (3 + 4) / (5 sqrt 2), 0, -2 / (2 sqrt 2); then / tau
    expected = [7 / (5 * math.sqrt(2)), 0.0, -1 / math.sqrt(2)]
    assert bounded_scores(manifold, 0.5).tolist() == pytest.approx([2 * e for e in expected], abs=1e-6)
    scaled = manifold.clone()
    scaled[0] *= 100.0  # the paper's scores grow with a row's norm; these do not
    assert torch.allclose(bounded_scores(scaled, 0.5), bounded_scores(manifold, 0.5))
    assert manifold_scores(scaled)[0] == pytest.approx(100 * manifold_scores(manifold)[0].item())


def test_class_aligned_entropy_matches_hand_computation_and_is_lowest_for_spread_confident_images():
    from trainers.rsm import class_aligned_entropy

    texts = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    images = torch.tensor([[2.0, 0.0], [1.0, 1.0]])
    tau = 0.5
    # image 1: cos (1, 0); image 2: cos (1/sqrt2, 1/sqrt2) -> q by hand
    q1 = torch.softmax(torch.tensor([1.0, 0.0]) / tau, 0)
    q2 = torch.tensor([0.5, 0.5])

    def h(p):
        return -(p * p.log()).sum().item()

    expected = (h(q1) + h(q2)) / 2 - h((q1 + q2) / 2)
    value, max_q = class_aligned_entropy(texts, images, tau)
    assert value.item() == pytest.approx(expected, rel=1e-5)
    assert max_q.item() == pytest.approx((q1.max() + 0.5).item() / 2, rel=1e-5)
    # the collapse measured with the paper's term (every image on one row) is not the minimum here
    collapsed, _ = class_aligned_entropy(texts, torch.tensor([[1.0, 0.0], [1.0, 0.0]]), 0.01)
    spread, _ = class_aligned_entropy(texts, torch.tensor([[1.0, 0.0], [0.0, 1.0]]), 0.01)
    assert collapsed.item() == pytest.approx(0.0, abs=1e-4)
    assert spread.item() == pytest.approx(-math.log(2), abs=1e-4)


@pytest.mark.parametrize("key", ["SCORE_TEMPERATURE", "CLASS_ALIGNED"])
def test_each_variant_is_one_opt_in_key_whose_term_reaches_the_student(key):
    from dassl.utils import UserError
    from trainers.rsm import RSMTerm

    assert RSMTerm.from_cfg(_rsm_cfg()).variant == "the paper's H(M)"  # default: the paper's term
    term = RSMTerm.from_cfg(_rsm_cfg(WEIGHT=3.0, DIM=4, **{key: 0.2}))
    assert key in term.describe()
    module = term.build_module(projected_dim=6, backbone_dim=3, text_dim=5)
    projected, texts = torch.randn(4, 6, requires_grad=True), torch.randn(7, 5)
    loss, summary = term.loss(module, torch.randn(4, 3), projected, texts)
    assert torch.isfinite(loss) and loss.item() == pytest.approx(3.0 * summary["H"].item(), rel=1e-6)
    assert loss.item() != pytest.approx(3.0 * module(projected, texts).item())  # not the paper's H(M)
    loss.backward()
    assert projected.grad is not None and projected.grad.abs().sum() > 0
    with pytest.raises(UserError, match=f"TRAINER.RSM.{key}"):
        RSMTerm.from_cfg(_rsm_cfg(**{key: -1.0}))


def test_the_two_variants_cannot_be_combined():
    from dassl.utils import UserError
    from trainers.rsm import RSMTerm

    with pytest.raises(UserError, match="SCORE_TEMPERATURE and CLASS_ALIGNED"):
        RSMTerm.from_cfg(_rsm_cfg(SCORE_TEMPERATURE=1.0, CLASS_ALIGNED=0.1))
