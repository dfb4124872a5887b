import math
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from training.losses.sigmoid import sigmoid_loss


def brute_force_loss(images, texts, logit_scale, logit_bias, mask):
    """−(1/N) Σ_{i,j contrastive} log σ(z_ij (t x_i·y_j + b)) with explicit loops."""
    t = logit_scale.exp()
    total = torch.zeros((), dtype=torch.float64)
    rows = [i for i in range(images.shape[0]) if mask[i]]
    for i in rows:
        for j in rows:
            sign = 1.0 if i == j else -1.0
            logit = t * torch.dot(images[i], texts[j]) + logit_bias
            total = total - torch.log(torch.sigmoid(sign * logit))
    return total / max(len(rows), 1)


def make_inputs(batch=7, dim=5, seed=0):
    generator = torch.Generator().manual_seed(seed)
    images = F.normalize(torch.randn(batch, dim, generator=generator, dtype=torch.float64), dim=-1)
    texts = F.normalize(
        images + 0.5 * torch.randn(batch, dim, generator=generator, dtype=torch.float64), dim=-1
    )
    # Moderate t and b so positives and negatives both matter.
    return (
        images,
        texts,
        torch.tensor(math.log(3.0), dtype=torch.float64),
        torch.tensor(-1.5, dtype=torch.float64),
    )


def value_and_grads(fn, images, texts, scale, bias):
    leaves = [x.clone().requires_grad_(True) for x in (images, texts, scale, bias)]
    value = fn(*leaves)
    grads = torch.autograd.grad(value, leaves)
    return value.detach(), [g.detach() for g in grads]


MASKS = {
    "all_contrastive": torch.ones(7, dtype=torch.bool),
    "two_grounding": torch.tensor([True, False, True, True, False, True, True]),
}


@pytest.mark.parametrize("mask_name", sorted(MASKS))
@pytest.mark.parametrize(
    "backend,chunk_size",
    [("auto", 0), ("local", 0), ("chunked", 3), ("chunked", 7), ("chunked", 100)],
)
def test_single_process_backends_match_brute_force_values_and_grads(backend, chunk_size, mask_name):
    images, texts, scale, bias = make_inputs()
    mask = MASKS[mask_name]
    ref_value, ref_grads = value_and_grads(
        lambda *a: brute_force_loss(*a, mask), images, texts, scale, bias
    )
    value, grads = value_and_grads(
        lambda *a: sigmoid_loss(*a, mask, backend=backend, chunk_size=chunk_size or 1024).double(),
        images,
        texts,
        scale,
        bias,
    )
    torch.testing.assert_close(value, ref_value, rtol=1e-5, atol=1e-6)
    for got, want in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("backend", ["local", "chunked"])
def test_grounding_samples_get_zero_gradient_and_do_not_change_the_loss(backend):
    images, texts, scale, bias = make_inputs()
    mask = MASKS["two_grounding"]
    _, (grad_images, grad_texts, _, _) = value_and_grads(
        lambda *a: sigmoid_loss(*a, mask, backend=backend, chunk_size=2), images, texts, scale, bias
    )
    assert torch.all(grad_images[~mask] == 0) and torch.all(grad_texts[~mask] == 0)
    assert grad_images[mask].abs().sum() > 0
    scrambled_images, scrambled_texts = images.clone(), texts.clone()
    scrambled_images[~mask] = -images[~mask]
    scrambled_texts[~mask] = texts[~mask].flip(0)
    before = sigmoid_loss(images, texts, scale, bias, mask, backend=backend, chunk_size=2)
    after = sigmoid_loss(
        scrambled_images, scrambled_texts, scale, bias, mask, backend=backend, chunk_size=2
    )
    assert before == after


def test_unknown_backend_and_shape_mismatch_are_rejected():
    images, texts, scale, bias = make_inputs()
    with pytest.raises(ValueError, match="backend"):
        sigmoid_loss(images, texts, scale, bias, backend="allgather")
    with pytest.raises(ValueError, match="shape"):
        sigmoid_loss(images, texts[:-1], scale, bias)
    with pytest.raises(RuntimeError, match="distributed"):
        sigmoid_loss(images, texts, scale, bias, backend="ring")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ring_worker(rank, world, port, images, texts, scale, bias, mask, out_path):
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    try:
        local = images.shape[0] // world
        rows = slice(rank * local, (rank + 1) * local)
        leaves = [x.clone().requires_grad_(True) for x in (images[rows], texts[rows], scale, bias)]
        # "auto" must pick the ring here: a local loss would miss the other rank's pairs.
        value = sigmoid_loss(*leaves, mask[rows], backend="auto")
        value.backward()
        torch.save(
            {"value": value.detach(), "grads": [x.grad for x in leaves]}, f"{out_path}.{rank}"
        )
    finally:
        dist.destroy_process_group()


def test_ring_backend_on_two_gloo_processes_matches_global_batch_reference(tmp_path):
    world = 2
    images, texts, scale, bias = make_inputs(batch=8, seed=3)
    mask = torch.tensor([True, True, False, True, True, False, True, True])
    out_path = str(tmp_path / "ring")
    mp.spawn(
        _ring_worker,
        args=(world, _free_port(), images, texts, scale, bias, mask, out_path),
        nprocs=world,
        join=True,
    )
    results = [torch.load(f"{out_path}.{rank}") for rank in range(world)]
    ref_value, (ref_images, ref_texts, ref_scale, ref_bias) = value_and_grads(
        lambda *a: brute_force_loss(*a, mask), images, texts, scale, bias
    )
    # Each rank returns world × its share; the rank mean (what DDP averages) is the global loss.
    mean_value = sum(r["value"] for r in results) / world
    torch.testing.assert_close(mean_value.double(), ref_value, rtol=1e-5, atol=1e-6)
    grad_images = torch.cat([r["grads"][0] for r in results]) / world
    grad_texts = torch.cat([r["grads"][1] for r in results]) / world
    torch.testing.assert_close(grad_images, ref_images, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(grad_texts, ref_texts, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(
        sum(r["grads"][2] for r in results) / world, ref_scale, rtol=1e-4, atol=1e-6
    )
    torch.testing.assert_close(
        sum(r["grads"][3] for r in results) / world, ref_bias, rtol=1e-4, atol=1e-6
    )
    assert torch.all(grad_images[~mask] == 0) and torch.all(grad_texts[~mask] == 0)
