import copy

import pytest
import torch

from training.optim.muon import Muon, orthogonalise


def two_matrix_params(seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [
        torch.nn.Parameter(torch.randn(24, 40, generator=generator)),
        torch.nn.Parameter(torch.randn(48, 16, generator=generator)),
    ]


def run_steps(optimizer, params, steps=5, seed=1):
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        for param in params:
            param.grad = torch.randn(param.shape, generator=generator)
        optimizer.step()


@pytest.mark.parametrize("nesterov", [True, False])
def test_fp32_muon_matches_torch_muon_to_bf16_tolerance(nesterov):
    ours, theirs = two_matrix_params(), two_matrix_params()
    kwargs = {"lr": 0.02, "momentum": 0.95, "nesterov": nesterov, "weight_decay": 0.1}
    run_steps(Muon(ours, ns_dtype=torch.float32, adjust_lr="match_rms_adamw", **kwargs), ours)
    run_steps(torch.optim.Muon(theirs, adjust_lr_fn="match_rms_adamw", **kwargs), theirs)
    start = two_matrix_params()
    for mine, reference, initial in zip(ours, theirs, start, strict=True):
        moved = (reference - initial).norm()
        assert moved > 0.1
        # torch runs Newton–Schulz in bf16: agree to a few bf16 ulps relative to the update.
        assert (mine - reference).norm() / moved < 2e-2


def test_orthogonalise_flattens_the_singular_values():
    matrix = torch.randn(32, 64) @ torch.diag(torch.logspace(-2, 1, 64))
    singular = torch.linalg.svdvals(orthogonalise(matrix, steps=5, dtype=torch.float32))
    assert singular.min() > 0.3 and singular.max() < 1.3
    tall = orthogonalise(matrix.T, steps=5, dtype=torch.float32)
    torch.testing.assert_close(tall, orthogonalise(matrix, steps=5, dtype=torch.float32).T)


def test_adamw_groups_match_torch_adamw():
    generator = torch.Generator().manual_seed(2)
    ours = [
        torch.nn.Parameter(torch.randn(7, generator=generator)),
        torch.nn.Parameter(torch.randn(3, 5, generator=generator)),
    ]
    theirs = copy.deepcopy(ours)
    Muon_opt = Muon(
        [{"params": ours, "use_muon": False}],
        lr=0.01,
        weight_decay=0.05,
        betas=(0.9, 0.95),
        eps=1e-8,
    )
    run_steps(Muon_opt, ours, steps=4)
    run_steps(
        torch.optim.AdamW(theirs, lr=0.01, weight_decay=0.05, betas=(0.9, 0.95), eps=1e-8),
        theirs,
        steps=4,
    )
    for mine, reference in zip(ours, theirs, strict=True):
        torch.testing.assert_close(mine, reference, rtol=1e-6, atol=1e-7)


def test_state_dict_round_trip_continues_identically():
    params = two_matrix_params() + [torch.nn.Parameter(torch.randn(5))]
    groups = [{"params": params[:2]}, {"params": params[2:], "use_muon": False}]
    optimizer = Muon(groups, lr=0.01)
    run_steps(optimizer, params, steps=2)
    clone_params = [torch.nn.Parameter(p.detach().clone()) for p in params]
    clone = Muon(
        [{"params": clone_params[:2]}, {"params": clone_params[2:], "use_muon": False}], lr=0.01
    )
    clone.load_state_dict(copy.deepcopy(optimizer.state_dict()))
    run_steps(optimizer, params, steps=2, seed=7)
    run_steps(clone, clone_params, steps=2, seed=7)
    for a, b in zip(params, clone_params, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_muon_groups_reject_non_matrix_parameters():
    with pytest.raises(ValueError, match="2-D"):
        Muon([torch.nn.Parameter(torch.zeros(4))])


def test_batched_orthogonalise_equals_matrix_by_matrix():
    generator = torch.Generator().manual_seed(3)
    for shape in ((5, 24, 40), (3, 48, 16)):
        stack = torch.randn(shape, generator=generator)
        batched = orthogonalise(stack, steps=5, dtype=torch.float32)
        one_by_one = torch.stack([orthogonalise(m, steps=5, dtype=torch.float32) for m in stack])
        torch.testing.assert_close(batched, one_by_one, rtol=1e-5, atol=1e-6)


def test_a_group_of_same_shape_matrices_steps_like_separate_optimizers():
    generator = torch.Generator().manual_seed(4)
    initial = [torch.randn(16, 24, generator=generator) for _ in range(3)] + [
        torch.randn(24, 16, generator=generator)
    ]
    together = [torch.nn.Parameter(t.clone()) for t in initial]
    apart = [torch.nn.Parameter(t.clone()) for t in initial]
    kwargs = {"lr": 0.02, "weight_decay": 0.1, "ns_dtype": torch.float32}
    run_steps(Muon(together, **kwargs), together, steps=3)
    # The same gradient draws as run_steps (per step, in parameter order), one optimizer each.
    optimizers = [Muon([p], **kwargs) for p in apart]
    draws = torch.Generator().manual_seed(1)
    for _ in range(3):
        for param, optimizer in zip(apart, optimizers, strict=True):
            param.grad = torch.randn(param.shape, generator=draws)
            optimizer.step()
    for mine, reference in zip(together, apart, strict=True):
        torch.testing.assert_close(mine, reference, rtol=1e-5, atol=1e-6)
