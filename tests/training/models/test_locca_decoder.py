import math

import pytest
import torch

from training.models.config import DecoderConfig
from training.models.locca import LocCaDecoder

VOCAB = 50
PREFIX_LEN, TARGET_LEN, LENGTH = 3, 4, 10


@pytest.fixture(scope="module")
def decoder():
    torch.manual_seed(0)
    model = LocCaDecoder(
        DecoderConfig(width=32, depth=2, heads=4, mlp_dim=64, max_len=16, ce_chunk_size=16),
        VOCAB,
        24,
    )
    # Give the output layer weights so the loss depends on the hidden states.
    torch.nn.init.normal_(model.output.weight, std=0.5)
    return model.eval()


def sequence_batch(batch=2):
    generator = torch.Generator().manual_seed(1)
    tokens = torch.randint(1, VOCAB, (batch, LENGTH), generator=generator)
    prefix_mask = torch.zeros(batch, LENGTH, dtype=torch.bool)
    target_mask = torch.zeros(batch, LENGTH, dtype=torch.bool)
    prefix_mask[:, :PREFIX_LEN] = True
    target_mask[:, PREFIX_LEN : PREFIX_LEN + TARGET_LEN] = True
    memory = torch.randn(batch, 5, 24, generator=generator)
    return memory, tokens, prefix_mask, target_mask


def test_parallel_rows_replace_every_target_carrying_input_with_the_mask_embedding(decoder):
    _, tokens, _, target_mask = sequence_batch()
    parallel = torch.tensor([True, False])
    inputs = decoder.decoder_inputs(tokens, target_mask, parallel)
    mask = decoder.mask_embedding
    # Position i carries tokens[i-1]: targets sit at 3..6, so inputs 4..7 are masked.
    for position in range(LENGTH):
        is_masked = torch.equal(inputs[0, position], mask)
        assert is_masked == (PREFIX_LEN + 1 <= position <= PREFIX_LEN + TARGET_LEN)
    torch.testing.assert_close(inputs[1, 1:], decoder.token_embedding(tokens[1, :-1]))
    torch.testing.assert_close(inputs[:, 0], decoder.bos_embedding.expand(2, -1))


def test_parallel_prediction_never_sees_target_tokens_but_sees_the_whole_prefix(decoder):
    memory, tokens, prefix_mask, target_mask = sequence_batch()
    parallel = torch.ones(2, dtype=torch.bool)
    hidden = decoder(memory, tokens, prefix_mask, target_mask, parallel)
    new_targets = tokens.clone()
    new_targets[target_mask] = (tokens[target_mask] + 7) % VOCAB
    valid = prefix_mask | target_mask
    torch.testing.assert_close(
        decoder(memory, new_targets, prefix_mask, target_mask, parallel)[valid], hidden[valid]
    )
    # Without the causal mask the first target position sees the last prefix token and beyond.
    new_prefix = tokens.clone()
    new_prefix[:, PREFIX_LEN - 1] = (tokens[:, PREFIX_LEN - 1] + 3) % VOCAB
    changed = decoder(memory, new_prefix, prefix_mask, target_mask, parallel)
    assert not torch.allclose(changed[:, 0], hidden[:, 0])  # position 0 attends forward


def test_causal_rows_see_earlier_tokens_only(decoder):
    memory, tokens, prefix_mask, target_mask = sequence_batch()
    causal = torch.zeros(2, dtype=torch.bool)
    hidden = decoder(memory, tokens, prefix_mask, target_mask, causal)
    edited = tokens.clone()
    edited[:, 4] = (tokens[:, 4] + 5) % VOCAB  # input of position 5
    changed = decoder(memory, edited, prefix_mask, target_mask, causal)
    valid = prefix_mask | target_mask
    torch.testing.assert_close(changed[:, :5], hidden[:, :5])
    assert not torch.allclose(changed[:, 5:][valid[:, 5:]], hidden[:, 5:][valid[:, 5:]])


def test_token_losses_cover_real_targets_only_and_match_full_logits(decoder):
    memory, tokens, prefix_mask, target_mask = sequence_batch(batch=3)
    target_mask[2] = False  # a missing target: this row must contribute nothing
    prefix_mask[2] = False
    parallel = torch.tensor([True, False, True])
    losses = decoder.token_losses(memory, tokens, prefix_mask, target_mask, parallel)
    assert losses.shape == (int(target_mask.sum()),)
    hidden = decoder(memory, tokens, prefix_mask, target_mask, parallel)
    expected = torch.nn.functional.cross_entropy(
        decoder.logits(hidden)[target_mask], tokens[target_mask], reduction="none"
    )
    torch.testing.assert_close(losses, expected, rtol=1e-5, atol=1e-5)


def test_zero_initialised_output_layer_starts_at_uniform_prediction():
    decoder = LocCaDecoder(
        DecoderConfig(width=16, depth=1, heads=2, mlp_dim=32, max_len=16), VOCAB, 16
    )
    memory, tokens, prefix_mask, target_mask = sequence_batch()
    losses = decoder.token_losses(
        memory[..., :16], tokens, prefix_mask, target_mask, torch.tensor([True, False])
    )
    torch.testing.assert_close(losses, torch.full_like(losses, math.log(VOCAB)))


def test_padded_memory_tokens_are_ignored(decoder):
    memory, tokens, prefix_mask, target_mask = sequence_batch()
    parallel = torch.tensor([False, True])
    padded_memory = torch.cat([memory, torch.full((2, 3, 24), 50.0)], dim=1)
    memory_mask = torch.zeros(2, 8, dtype=torch.bool)
    memory_mask[:, :5] = True
    plain = decoder(memory, tokens, prefix_mask, target_mask, parallel)
    padded = decoder(padded_memory, tokens, prefix_mask, target_mask, parallel, memory_mask)
    torch.testing.assert_close(padded, plain, rtol=1e-5, atol=1e-5)


def test_greedy_decode_is_consistent_with_teacher_forcing_on_its_own_output(decoder):
    memory = torch.randn(2, 5, 24, generator=torch.Generator().manual_seed(4))
    prefixes = [[3, 9, 11], [7]]
    allowed = range(20, 40)
    decoded = decoder.greedy_decode(memory, prefixes, steps=4, allowed=allowed)
    assert all(len(row) == 4 and all(t in allowed for t in row) for row in decoded)
    for row, prefix in enumerate(prefixes):
        sequence = torch.tensor([prefix + decoded[row]])
        prefix_mask = torch.zeros_like(sequence, dtype=torch.bool)
        prefix_mask[:, : len(prefix)] = True
        hidden = decoder(
            memory[row : row + 1], sequence, prefix_mask, ~prefix_mask, torch.tensor([False])
        )
        logits = decoder.logits(hidden[0, len(prefix) :])
        restricted = logits[:, allowed.start : allowed.stop].argmax(-1) + allowed.start
        assert restricted.tolist() == decoded[row]


def test_greedy_decode_keeps_a_box_far_corner_past_its_near_corner(decoder):
    memory = torch.randn(8, 5, 24, generator=torch.Generator().manual_seed(5))
    prefixes = [[3, 9], [7]] * 4
    allowed = range(20, 40)
    decoded = decoder.greedy_decode(
        memory, prefixes, steps=4, allowed=allowed, increasing={2: 0, 3: 1}
    )
    for x0, y0, x1, y1 in decoded:
        assert all(t in allowed for t in (x0, y0, x1, y1))
        assert (x1 > x0 or x0 == x1 == 39) and (y1 > y0 or y0 == y1 == 39)
