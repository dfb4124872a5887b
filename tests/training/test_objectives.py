import copy
import math
import random

import pytest
import torch
import torch.nn.functional as F

from training.locca_targets import collate_locca, make_locca_example
from training.losses.sigmoid import sigmoid_loss
from training.models.config import model_config
from training.models.siglip import SigLIP2
from training.models.vision import patchify
from training.objectives import LossConfig, locca_task_losses, phase1_loss
from training.tokenizer import Tokenizer

BATCH = 6
CONTRASTIVE = torch.tensor([True, True, True, True, False, False])


@pytest.fixture(scope="module")
def tokenizer():
    return Tokenizer(context_length=model_config("tiny").text.context_length)


@pytest.fixture(scope="module")
def model(tokenizer):
    torch.manual_seed(0)
    return SigLIP2(model_config("tiny", **{"text.vocab_size": tokenizer.vocab_size}))


def make_batch(tokenizer, seed=0):
    generator = torch.Generator().manual_seed(seed)
    rng = random.Random(seed)
    captions = ["a red square", "a blue circle", "a green triangle", "two yellow stars", None, None]
    refs = [
        [],
        [],
        [{"phrase": "green triangle", "box": [0.2, 0.2, 0.6, 0.7]}],
        [],
        [{"phrase": "cat", "box": [0, 0, 0.5, 0.5]}],
    ] * 2
    examples = [
        make_locca_example(tokenizer, caption, refs[i], rng) for i, caption in enumerate(captions)
    ]
    return {
        "image": torch.rand(BATCH, 3, 64, 64, generator=generator) * 2 - 1,
        "text": tokenizer.encode([c or "" for c in captions]),
        "contrastive": CONTRASTIVE.clone(),
        **collate_locca(examples, model_config("tiny").decoder.max_len),
    }


def test_phase1_loss_is_the_weighted_sum_of_its_terms(model, tokenizer):
    batch = make_batch(tokenizer)
    loss, metrics = phase1_loss(model, batch, LossConfig(sigmoid_weight=0.5, locca_weight=2.0))
    assert torch.isfinite(loss)
    assert loss.item() == pytest.approx(0.5 * metrics["sigmoid"] + 2.0 * metrics["locca"], rel=1e-6)
    # Untrained decoder (zero output layer): every target token costs log(vocab).
    assert metrics["locca"] == pytest.approx(math.log(tokenizer.vocab_size), rel=1e-5)
    assert metrics["t"] == pytest.approx(10.0) and metrics["b"] == model.cfg.init_logit_bias
    assert metrics["contrastive_samples"] == 4.0


def test_sigmoid_term_uses_normalised_embeddings_of_contrastive_samples_only(model, tokenizer):
    batch = make_batch(tokenizer)
    _, metrics = phase1_loss(model, batch, LossConfig())
    with torch.no_grad():
        images = F.normalize(model.encode_image(batch["image"])[0], dim=-1)
        texts = F.normalize(model.encode_text(batch["text"]), dim=-1)
        expected = sigmoid_loss(images, texts, model.logit_scale, model.logit_bias, CONTRASTIVE)
    assert metrics["sigmoid"] == pytest.approx(expected.item(), rel=1e-5)


def test_grounding_samples_never_enter_the_contrastive_loss(model, tokenizer):
    batch = make_batch(tokenizer)
    batch["image"].requires_grad_(True)
    cfg = LossConfig(locca_weight=0.0)
    loss, metrics = phase1_loss(model, batch, cfg)
    (grad_images,) = torch.autograd.grad(loss, batch["image"])
    assert torch.all(grad_images[~CONTRASTIVE] == 0)
    assert grad_images[CONTRASTIVE].abs().sum() > 0
    other = make_batch(tokenizer)
    other["image"][~CONTRASTIVE] = torch.randn(2, 3, 64, 64)
    other["text"][~CONTRASTIVE] = tokenizer.encode(["something else entirely"] * 2)
    assert phase1_loss(model, other, cfg)[1]["sigmoid"] == pytest.approx(
        metrics["sigmoid"], rel=1e-6
    )


def test_text_tower_encodes_only_contrastive_rows_with_the_same_gradients(model, tokenizer):
    batch = make_batch(tokenizer)
    seen = []
    hook = model.text.register_forward_hook(lambda _m, args, _out: seen.append(args[0].shape[0]))
    try:
        model.zero_grad()
        phase1_loss(model, batch, LossConfig(locca_weight=0.0))[0].backward()
    finally:
        hook.remove()
    assert seen == [int(CONTRASTIVE.sum())]
    skipped = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    # Reference: every row encoded, the grounding rows masked out of the loss.
    model.zero_grad()
    out = model(image=batch["image"], text=batch["text"])
    sigmoid_loss(
        F.normalize(out["image_embeds"], dim=-1),
        F.normalize(out["text_embeds"], dim=-1),
        out["logit_scale"],
        out["logit_bias"],
        CONTRASTIVE,
    ).backward()
    compared = [n for n, p in model.named_parameters() if n in skipped and p.grad is not None]
    assert any(n.startswith("text.") for n in compared) and any(
        n.startswith("vision.") for n in compared
    )
    for name in compared:
        torch.testing.assert_close(
            skipped[name], model.get_parameter(name).grad, rtol=1e-5, atol=1e-7, msg=name
        )
    model.zero_grad()


def test_phase1_loss_backpropagates_into_both_towers_and_the_decoder_head(model, tokenizer):
    model.zero_grad()
    loss, _ = phase1_loss(
        model, make_batch(tokenizer), LossConfig(sigmoid_backend="chunked", sigmoid_chunk_size=4)
    )
    loss.backward()
    for name in (
        "vision.patch_embedding.weight",
        "text.token_embedding.weight",
        "decoder.output.weight",
        "logit_bias",
    ):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name
    model.zero_grad()


def test_naflex_batch_gives_the_same_loss_as_the_square_images(model, tokenizer):
    batch = make_batch(tokenizer)
    torch.manual_seed(5)  # the parallel-prediction draw must match between the two calls
    square_loss, _ = phase1_loss(model, batch, LossConfig())
    patches, coords = patchify(batch.pop("image"), model.cfg.vision.patch_size)
    batch.update(
        patches=patches,
        patch_coords=coords,
        patch_mask=torch.ones(coords.shape[:2], dtype=torch.bool),
    )
    torch.manual_seed(5)
    naflex_loss, _ = phase1_loss(model, batch, LossConfig())
    torch.testing.assert_close(naflex_loss, square_loss, rtol=1e-5, atol=1e-5)


def test_loss_config_rejects_unknown_backend():
    with pytest.raises(ValueError, match="sigmoid_backend"):
        LossConfig(sigmoid_backend="gather")


def test_compacting_the_decoder_batch_does_not_change_the_loss(model, tokenizer):
    model = copy.deepcopy(model)
    # A trained-looking output layer, so token losses differ from token to token.
    torch.nn.init.normal_(model.decoder.output.weight, std=0.5)
    batch = make_batch(tokenizer)
    torch.manual_seed(7)
    compact_loss, compact_metrics = phase1_loss(model, batch, LossConfig(locca_compact=True))
    torch.manual_seed(7)
    full_loss, full_metrics = phase1_loss(model, batch, LossConfig(locca_compact=False))
    torch.testing.assert_close(compact_loss, full_loss, rtol=1e-5, atol=1e-5)
    for task in ("caption", "aref", "gcap"):
        assert compact_metrics[f"locca_{task}"] == pytest.approx(
            full_metrics[f"locca_{task}"], rel=1e-5
        )


def test_per_task_losses_average_each_task_and_are_nan_when_absent():
    target_mask = torch.tensor([[True, True, False], [True, False, False], [False, True, True]])
    decoder_batch = {"target_mask": target_mask, "task_index": torch.tensor([0, 0, 2])}
    # Row-major order of the True entries: row 0 (task 0) x2, row 1 (task 0), row 2 (task 2) x2.
    token_losses = torch.tensor([1.0, 2.0, 3.0, 10.0, 20.0])
    means = locca_task_losses(token_losses, decoder_batch)
    assert means["locca_caption"].item() == pytest.approx(2.0)
    assert math.isnan(means["locca_aref"].item())
    assert means["locca_gcap"].item() == pytest.approx(15.0)


def test_locca_weight_zero_skips_the_decoder_with_the_same_random_draws(model, tokenizer):
    batch = make_batch(tokenizer)
    calls = []
    hook = model.decoder.register_forward_hook(lambda *_: calls.append(1))
    try:
        torch.manual_seed(5)
        with_decoder = phase1_loss(model, batch, LossConfig())[1]
        after_with = torch.rand(4)
        torch.manual_seed(5)
        loss, without = phase1_loss(model, batch, LossConfig(locca_weight=0.0))
        after_without = torch.rand(4)
    finally:
        hook.remove()
    assert calls == [1]  # only the run with a LocCa weight called the decoder
    torch.testing.assert_close(after_with, after_without)  # the same draws were consumed
    assert "locca" not in without and not any(k.startswith("locca_") for k in without)
    assert without["sigmoid"] == pytest.approx(with_decoder["sigmoid"], rel=1e-6)
    assert loss.item() == pytest.approx(without["sigmoid"], rel=1e-6)
    model.zero_grad()
    loss.backward()
    assert all(p.grad is None for p in model.decoder.parameters())
    assert model.vision.patch_embedding.weight.grad is not None
    model.zero_grad()
