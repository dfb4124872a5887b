import math

import pytest
import torch

from training.models.config import model_config
from training.models.siglip import SigLIP2
from training.optim import (
    Muon,
    OptimConfig,
    build_optimizer,
    build_scheduler,
    lr_at,
    split_parameters,
)


@pytest.fixture(scope="module")
def model():
    return SigLIP2(model_config("tiny", **{"text.vocab_size": 300}))


def test_split_puts_hidden_matrices_on_muon_and_everything_else_on_adamw(model):
    split = split_parameters(model)
    muon = {name for name, _ in split["muon"]}
    adamw = {name for name, _ in split["adamw_decay"] + split["adamw_no_decay"]}
    no_decay = {name for name, _ in split["adamw_no_decay"]}
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert muon.isdisjoint(adamw) and muon | adamw == trainable
    assert "vision.layers.0.self_attn.q_proj.weight" in muon
    assert "text.layers.1.mlp.fc2.weight" in muon
    assert "decoder.layers.0.cross_attn.k_proj.weight" in muon
    # The pooling heads are hidden layers: the MAP head's attention and MLP, the text projection.
    assert {
        "vision.head.attention.q_proj.weight",
        "vision.head.attention.out_proj.weight",
        "vision.head.mlp.fc1.weight",
        "vision.head.mlp.fc2.weight",
        "text.head.weight",
    } <= muon
    for name in (
        "vision.patch_embedding.weight",
        "vision.position_embedding",
        "text.token_embedding.weight",
        "vision.head.attention.q_proj.bias",
        "vision.head.probe",
        "text.head.bias",
        "decoder.output.weight",
        "distill_heads.silc.prototypes",
        "distill_heads.tips.mlp.0.weight",
        "logit_scale",
        "logit_bias",
        "vision.layers.0.layer_norm1.weight",
        "vision.layers.0.self_attn.q_proj.bias",
    ):
        assert name in adamw, name
    assert {
        "logit_scale",
        "logit_bias",
        "vision.position_embedding",
        "vision.head.probe",
    } <= no_decay
    assert "text.token_embedding.weight" not in no_decay


def test_build_optimizer_gives_one_object_for_muon_and_adamw_groups(model):
    optimizer = build_optimizer(model, OptimConfig(name="muon", lr=1e-3, weight_decay=0.1))
    assert isinstance(optimizer, Muon)
    by_name = {group["name"]: group for group in optimizer.param_groups}
    assert by_name["muon"]["use_muon"] and not by_name["adamw_decay"]["use_muon"]
    assert by_name["adamw_no_decay"]["weight_decay"] == 0.0
    total = sum(len(group["params"]) for group in optimizer.param_groups)
    assert total == len([p for p in model.parameters() if p.requires_grad])
    adamw = build_optimizer(model, OptimConfig(name="adamw"))
    assert isinstance(adamw, torch.optim.AdamW)
    assert sum(len(g["params"]) for g in adamw.param_groups) == total


def test_lr_schedule_warms_up_linearly_then_decays_by_cosine_to_the_floor():
    cfg = OptimConfig(lr=1.0, warmup_steps=10, total_steps=110, min_lr_ratio=0.1)
    assert lr_at(0, cfg) == pytest.approx(0.1)
    assert lr_at(9, cfg) == pytest.approx(1.0)
    assert lr_at(10, cfg) == pytest.approx(1.0)
    assert lr_at(60, cfg) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_at(110, cfg) == pytest.approx(0.1)
    assert lr_at(500, cfg) == pytest.approx(0.1)


def test_one_scheduler_drives_muon_and_adamw_groups(model):
    cfg = OptimConfig(lr=2e-3, warmup_steps=4, total_steps=20)
    optimizer = build_optimizer(model, cfg)
    scheduler = build_scheduler(optimizer, cfg)
    for step in range(6):
        assert all(
            group["lr"] == pytest.approx(lr_at(step, cfg)) for group in optimizer.param_groups
        )
        optimizer.step()
        scheduler.step()


def test_optim_config_rejects_bad_values():
    with pytest.raises(ValueError, match="optimizer name"):
        OptimConfig(name="sgd")
    with pytest.raises(ValueError, match="ns_dtype"):
        OptimConfig(ns_dtype="float16")


def test_plain_adamw_on_cpu_is_fused_and_steps_like_the_per_tensor_loop():
    """optim.name=adamw takes torch's fused kernel on CPU (torch's CPU default is a loop of small
    ops per parameter); the trajectory equals the loop's up to float rounding, and the optimizer
    state round-trips through a state_dict into a fresh one."""
    torch.manual_seed(0)
    ours_model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.LayerNorm(5))
    loop_model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.LayerNorm(5))
    loop_model.load_state_dict(ours_model.state_dict())
    cfg = OptimConfig(name="adamw", lr=0.01, weight_decay=0.1)
    ours = build_optimizer(ours_model, cfg)
    assert ours.defaults["fused"] is True
    loop = torch.optim.AdamW(
        [
            {"params": [loop_model[0].weight], "weight_decay": 0.1},
            {"params": [loop_model[0].bias, *loop_model[1].parameters()], "weight_decay": 0.0},
        ],
        lr=0.01,
        betas=cfg.betas,
        eps=cfg.eps,
        foreach=False,
    )
    for step in range(5):
        inputs = torch.randn(4, 6, generator=torch.Generator().manual_seed(step))
        for model, optimizer in ((ours_model, ours), (loop_model, loop)):
            optimizer.zero_grad()
            model(inputs).square().sum().backward()
            optimizer.step()
    for mine, theirs in zip(ours_model.parameters(), loop_model.parameters(), strict=True):
        torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-6)
    again = build_optimizer(ours_model, cfg)
    again.load_state_dict(ours.state_dict())
    for mine, theirs in zip(again.state.values(), ours.state.values(), strict=True):
        torch.testing.assert_close(mine["exp_avg_sq"], theirs["exp_avg_sq"])
