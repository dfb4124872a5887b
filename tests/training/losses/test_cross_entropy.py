import pytest
import torch
import torch.nn.functional as F

from training.losses.cross_entropy import linear_cross_entropy


@pytest.mark.parametrize("chunk_size", [1, 7, 16, 64])
@pytest.mark.parametrize("with_bias", [True, False])
def test_chunked_cross_entropy_equals_plain_cross_entropy_in_value_and_gradients(
    chunk_size, with_bias
):
    generator = torch.Generator().manual_seed(0)
    vocab, dim, tokens = 37, 8, 11
    hidden = torch.randn(tokens, dim, generator=generator, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(vocab, dim, generator=generator, dtype=torch.float64, requires_grad=True)
    bias = (
        torch.randn(vocab, generator=generator, dtype=torch.float64, requires_grad=True)
        if with_bias
        else None
    )
    # Targets at both ends of the vocabulary and inside later chunks.
    targets = torch.tensor([0, 36, 5, 16, 17, 30, 1, 36, 0, 22, 9])
    leaves = [hidden, weight] + ([bias] if with_bias else [])
    upstream = torch.rand(tokens, generator=generator, dtype=torch.float64)

    plain = F.cross_entropy(F.linear(hidden, weight, bias), targets, reduction="none")
    plain_grads = torch.autograd.grad(plain, leaves, upstream)
    chunked = linear_cross_entropy(hidden, weight, bias, targets, chunk_size)
    chunked_grads = torch.autograd.grad(chunked, leaves, upstream)

    # The chunked loss computes in fp32 whatever the input dtype; compare at fp32 precision.
    torch.testing.assert_close(chunked.double(), plain, rtol=1e-5, atol=1e-5)
    for got, want in zip(chunked_grads, plain_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_chunked_cross_entropy_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="targets"):
        linear_cross_entropy(
            torch.zeros(3, 4), torch.zeros(5, 4), None, torch.zeros(2, dtype=torch.long)
        )
