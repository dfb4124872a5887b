import copy
import random

import pytest
import torch

from training.locca_targets import collate_locca, make_locca_example
from training.losses.gram import gram_loss
from training.losses.koleo import koleo_loss
from training.models.config import model_config
from training.models.distill import ema_update, make_ema_teacher
from training.models.siglip import SigLIP2
from training.objectives import LossConfig, phase2_loss
from training.tokenizer import Tokenizer

BATCH = 4


@pytest.fixture(scope="module")
def tokenizer():
    return Tokenizer(context_length=model_config("tiny").text.context_length)


@pytest.fixture
def student(tokenizer):
    torch.manual_seed(0)
    return SigLIP2(model_config("tiny", **{"text.vocab_size": tokenizer.vocab_size}))


def make_batch(tokenizer):
    generator = torch.Generator().manual_seed(1)
    rng = random.Random(0)
    captions = ["a red square", "a blue circle", None, "a green star"]
    refs = [[], [], [{"phrase": "cat", "box": [0.1, 0.1, 0.6, 0.6]}], []]
    examples = [
        make_locca_example(tokenizer, c, r, rng) for c, r in zip(captions, refs, strict=True)
    ]
    return {
        "image": torch.rand(BATCH, 3, 64, 64, generator=generator) * 2 - 1,
        "local_crops": torch.rand(BATCH, 3, 3, 32, 32, generator=generator) * 2 - 1,
        "text": tokenizer.encode([c or "" for c in captions]),
        "contrastive": torch.tensor([True, True, False, True]),
        **collate_locca(examples, model_config("tiny").decoder.max_len),
    }


def test_phase2_loss_adds_weighted_distillation_terms_to_phase1(student, tokenizer):
    teacher = make_ema_teacher(student)
    cfg = LossConfig(
        silc_weight=1.0,
        tips_weight=0.25,
        distill_size_factor=2.0,
        koleo_weight=0.1,
        gram_weight=3.0,
    )
    loss, metrics = phase2_loss(student, teacher, make_batch(tokenizer), cfg, gram_teacher=teacher)
    phase1_part = metrics["sigmoid"] + metrics["locca"]
    distill_part = (
        2.0 * (metrics["silc"] + 0.25 * metrics["tips"])
        + 0.1 * metrics["koleo"]
        + 3.0 * metrics["gram"]
    )
    assert loss.item() == pytest.approx(phase1_part + distill_part, rel=1e-5)
    assert all(
        torch.isfinite(torch.tensor(v))
        for v in (metrics["silc"], metrics["tips"], metrics["koleo"])
    )
    # The student equals its Gram teacher before any update: nothing to anchor yet.
    assert metrics["gram"] == pytest.approx(0.0, abs=1e-10)


def test_phase2_gradients_reach_the_student_heads_and_never_the_teachers(student, tokenizer):
    teacher = make_ema_teacher(student)
    gram_teacher = make_ema_teacher(student)
    loss, _ = phase2_loss(
        student, teacher, make_batch(tokenizer), LossConfig(), gram_teacher=gram_teacher
    )
    loss.backward()
    heads = student.distill_heads
    assert heads.silc.mlp[0].weight.grad.abs().sum() > 0
    assert heads.tips.mlp[0].weight.grad.abs().sum() > 0
    assert student.vision.mask_token.grad.abs().sum() > 0  # TIPS trains the mask token
    assert all(p.grad is None for p in teacher.parameters())
    assert all(p.grad is None for p in gram_teacher.parameters())


def test_phase2_moves_the_teacher_centers_toward_the_teacher_logits(student, tokenizer):
    teacher = make_ema_teacher(student)
    batch = make_batch(tokenizer)
    with torch.no_grad():
        teacher_logits = teacher(image=batch["image"], head_logits=True)["silc_logits"]
    phase2_loss(student, teacher, batch, LossConfig())
    momentum = student.cfg.distill.center_momentum
    torch.testing.assert_close(
        student.distill_heads.silc_center.center, (1 - momentum) * teacher_logits.mean(0)
    )
    assert student.distill_heads.tips_center.center.abs().sum() > 0


def test_ema_update_moves_teacher_parameters_by_the_momentum(student):
    teacher = make_ema_teacher(student)
    before = copy.deepcopy(teacher.state_dict())
    with torch.no_grad():
        for param in student.parameters():
            param.add_(1.0)
    ema_update(teacher, student, momentum=0.9)
    for name, param in teacher.named_parameters():
        expected = 0.9 * before[name] + 0.1 * dict(student.named_parameters())[name]
        torch.testing.assert_close(param, expected)
    assert not any(p.requires_grad for p in teacher.parameters())


def test_gram_and_koleo_terms_use_the_student_outputs(student, tokenizer):
    teacher = make_ema_teacher(student)
    gram_teacher = SigLIP2(student.cfg)  # a different network: a non-zero anchor
    batch = make_batch(tokenizer)
    torch.manual_seed(3)
    _, metrics = phase2_loss(student, teacher, batch, LossConfig(), gram_teacher=gram_teacher)
    with torch.no_grad():
        out = student(image=batch["image"])
        expected_gram = gram_loss(
            out["patch_tokens"], gram_teacher(image=batch["image"])["patch_tokens"]
        )
        expected_koleo = koleo_loss(out["image_embeds"])
    assert metrics["gram"] == pytest.approx(expected_gram.item(), rel=1e-5)
    assert metrics["koleo"] == pytest.approx(expected_koleo.item(), rel=1e-5)


def test_phase2_needs_distillation_heads(tokenizer):
    model = SigLIP2(model_config("tiny", distill=None, **{"text.vocab_size": tokenizer.vocab_size}))
    with pytest.raises(ValueError, match="no distillation heads"):
        phase2_loss(model, make_ema_teacher(model), make_batch(tokenizer), LossConfig())
