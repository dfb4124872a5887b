import math

import pytest
import torch

from training.losses.distillation import TeacherCenter
from training.losses.gram import gram_loss
from training.losses.koleo import koleo_loss
from training.losses.silc import silc_loss
from training.losses.tips import sample_token_mask, tips_loss
from training.models.distill import DINOHead


def softmax_list(values, temperature):
    exps = [math.exp(v / temperature) for v in values]
    return [e / sum(exps) for e in exps]


def cross_entropy_lists(teacher, student, t_temp, s_temp, center):
    targets = softmax_list([t - c for t, c in zip(teacher, center, strict=True)], t_temp)
    log_probs = [math.log(p) for p in softmax_list(student, s_temp)]
    return -sum(p * q for p, q in zip(targets, log_probs, strict=True))


@pytest.fixture
def center():
    module = TeacherCenter(prototypes=5, momentum=0.8)
    module.center.copy_(torch.tensor([0.1, -0.2, 0.0, 0.3, 0.05]))
    return module


def test_silc_loss_matches_explicit_loops_over_images_and_crops(center):
    generator = torch.Generator().manual_seed(0)
    teacher = torch.randn(3, 5, generator=generator)
    student = torch.randn(3, 4, 5, generator=generator)
    mask = torch.tensor([True, False, True])
    expected = 0.0
    for image in (0, 2):
        crops = [
            cross_entropy_lists(
                teacher[image].tolist(),
                student[image, crop].tolist(),
                0.04,
                0.1,
                center.center.tolist(),
            )
            for crop in range(4)
        ]
        expected += sum(crops) / 4
    expected /= 2
    got = silc_loss(teacher, student, center, 0.04, 0.1, sample_mask=mask)
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_teacher_center_is_an_ema_of_real_rows(center):
    logits = torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0], [3.0, 2.0, 1.0, 0.0, -1.0], [100.0] * 5])
    before = center.center.clone()
    center.update(logits, row_mask=torch.tensor([True, True, False]))
    expected = 0.8 * before + 0.2 * torch.tensor([2.0, 2.0, 2.0, 2.0, 2.0])
    torch.testing.assert_close(center.center, expected)
    assert "center" in center.state_dict()


def test_tips_loss_averages_masked_patches_per_image_then_over_images(center):
    generator = torch.Generator().manual_seed(1)
    teacher = torch.randn(3, 4, 5, generator=generator)
    student = torch.randn(3, 4, 5, generator=generator, requires_grad=True)
    token_mask = torch.tensor([[True, False, True, True], [False] * 4, [False, True, False, False]])
    per_image = []
    for image in range(3):
        masked = [p for p in range(4) if token_mask[image, p]]
        if masked:
            terms = [
                cross_entropy_lists(
                    teacher[image, p].tolist(),
                    student[image, p].tolist(),
                    0.04,
                    0.1,
                    center.center.tolist(),
                )
                for p in masked
            ]
            per_image.append(sum(terms) / len(terms))
    got = tips_loss(teacher, student, token_mask, center)
    assert got.item() == pytest.approx(sum(per_image) / len(per_image), rel=1e-5)
    (grad,) = torch.autograd.grad(got, student)
    assert torch.all(grad[~token_mask] == 0)


def test_token_mask_hides_the_requested_share_of_real_patches_only():
    patch_mask = torch.zeros(4, 10, dtype=torch.bool)
    for row, real in enumerate([10, 7, 4, 1]):
        patch_mask[row, :real] = True
    token_mask = sample_token_mask(
        patch_mask, ratio=0.5, generator=torch.Generator().manual_seed(0)
    )
    assert token_mask.sum(dim=1).tolist() == [5, 4, 2, 0]  # round half to even: 3.5 → 4, 0.5 → 0
    assert not (token_mask & ~patch_mask).any()
    again = sample_token_mask(patch_mask, ratio=0.5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(token_mask, again)


def test_gram_loss_matches_explicit_pairs_and_ignores_padding():
    generator = torch.Generator().manual_seed(2)
    student = torch.randn(2, 4, 6, generator=generator)
    teacher = torch.randn(2, 4, 3, generator=generator)
    patch_mask = torch.tensor([[True, True, True, False], [True, True, True, True]])

    def cosine(a, b):
        return float(torch.dot(a, b) / (a.norm() * b.norm()))

    per_image = []
    for image in range(2):
        real = [p for p in range(4) if patch_mask[image, p]]
        errors = [
            (
                cosine(student[image, i], student[image, j])
                - cosine(teacher[image, i], teacher[image, j])
            )
            ** 2
            for i in real
            for j in real
        ]
        per_image.append(sum(errors) / len(errors))
    got = gram_loss(student, teacher, patch_mask)
    assert got.item() == pytest.approx(sum(per_image) / 2, rel=1e-5)
    padded = student.clone()
    padded[0, 3] = 1e3
    assert gram_loss(padded, teacher, patch_mask).item() == pytest.approx(got.item(), rel=1e-6)


def test_koleo_loss_matches_nearest_neighbour_distances():
    generator = torch.Generator().manual_seed(3)
    embeddings = torch.randn(5, 4, generator=generator)
    mask = torch.tensor([True, True, False, True, True])
    unit = [e / e.norm() for e in embeddings]
    rows = [i for i in range(5) if mask[i]]
    expected = 0.0
    for i in rows:
        nearest = min(float((unit[i] - unit[j]).norm()) for j in rows if j != i)
        expected -= math.log(nearest + 1e-8)
    expected /= len(rows)
    assert koleo_loss(embeddings, mask).item() == pytest.approx(expected, rel=1e-5)
    # Spreading apart lowers the loss: two near-duplicates cost more than two orthogonal vectors.
    close = koleo_loss(torch.tensor([[1.0, 0.0], [1.0, 0.01]]))
    apart = koleo_loss(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    assert close > apart


def test_dino_head_projects_onto_unit_norm_prototypes():
    head = DINOHead(in_dim=8, prototypes=11, hidden_dim=16, bottleneck_dim=4, layers=3)
    out = head(torch.randn(2, 3, 8))
    assert out.shape == (2, 3, 11)
    # Bottleneck features are unit-norm and prototypes unit-norm, so logits are cosines.
    assert out.abs().max() <= 1.0 + 1e-5
    # Scaling a prototype changes nothing: only its direction counts.
    with torch.no_grad():
        x = torch.randn(5, 8)
        before = head(x)
        head.prototypes[3] *= 7.0
        torch.testing.assert_close(head(x), before)
