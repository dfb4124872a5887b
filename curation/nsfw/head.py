"""The NSFW head: a small MLP on the scorer's L2-normalised image embeddings (LAION's detector is
the same shape: a few dense layers on CLIP embeddings, one sigmoid output).

File format (one safetensors file, so a user supplies exactly one thing): tensors
`layers.{i}.weight` (out × in) and `layers.{i}.bias` (out) for each linear layer i = 0..n, ReLU
between them, a sigmoid on the last one's single output; the header's metadata key `nsfw_head`
holds JSON `{"input_dim": D, "hidden": [..], "threshold": t, "scorer": {...}, "fit": {...}}`.
`threshold` is the probability at or above which a sample is dropped; `scorer` (optional) names
the embedding model (`model_name`) the head was fitted on, and the stage refuses another one.
To bring other weights (e.g. a PyTorch port of LAION's detector for ViT-L/14), save their linear
layers under these names with `save_head`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from safetensors.torch import load, save
from torch import nn

from curation import fsio
from curation.nsfw.settings import FitSettings

METADATA_KEY = "nsfw_head"


@dataclass(frozen=True)
class HeadSpec:
    input_dim: int
    hidden: tuple[int, ...] = (128, 32)
    threshold: float = 0.5
    scorer: dict[str, Any] = field(default_factory=dict)  # e.g. {"model_name": "ViT-B-32"}
    fit: dict[str, Any] = field(default_factory=dict)  # how it was fitted, held-out metrics

    def __post_init__(self) -> None:
        if self.input_dim < 1 or any(width < 1 for width in self.hidden):
            raise ValueError(f"nsfw head: bad layer sizes {self.input_dim} -> {self.hidden}")
        if not 0 < self.threshold < 1:
            raise ValueError(f"nsfw head: threshold must be in (0, 1), got {self.threshold}")

    def to_record(self) -> dict[str, Any]:
        return {**asdict(self), "hidden": list(self.hidden)}


class NsfwHead(nn.Module):
    def __init__(self, spec: HeadSpec) -> None:
        super().__init__()
        self.spec = spec
        widths = [spec.input_dim, *spec.hidden, 1]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths, widths[1:]))

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Logits (one per row)."""
        x = embeddings
        for layer in self.layers[:-1]:
            x = torch.relu(layer(x))
        return self.layers[-1](x).squeeze(-1)

    @torch.no_grad()
    def probabilities(self, embeddings: np.ndarray, batch_rows: int = 65_536) -> np.ndarray:
        """P(unsafe) per row of an (N, input_dim) array, as float32."""
        if embeddings.ndim != 2 or embeddings.shape[1] != self.spec.input_dim:
            raise ValueError(
                f"nsfw head expects (N, {self.spec.input_dim}) embeddings, got {embeddings.shape}"
            )
        self.eval()
        out = np.empty(len(embeddings), dtype=np.float32)
        for start in range(0, len(embeddings), batch_rows):
            chunk = torch.from_numpy(np.asarray(embeddings[start : start + batch_rows], np.float32))
            out[start : start + len(chunk)] = torch.sigmoid(self(chunk)).numpy()
        return out


def head_to_bytes(head: NsfwHead) -> bytes:
    tensors = {name: value.detach().contiguous() for name, value in head.state_dict().items()}
    return save(tensors, metadata={METADATA_KEY: json.dumps(head.spec.to_record(), sort_keys=True)})


def save_head(head: NsfwHead, url: str) -> None:
    fsio.write_bytes(url, head_to_bytes(head))


def spec_from_bytes(data: bytes, where: str = "nsfw head") -> HeadSpec:
    """The spec in a safetensors header (8-byte little-endian length, then JSON)."""
    if len(data) < 8 or len(data) < 8 + int.from_bytes(data[:8], "little"):
        raise ValueError(f"{where}: not a safetensors file")
    header = json.loads(data[8 : 8 + int.from_bytes(data[:8], "little")])
    metadata = header.get("__metadata__") or {}
    if METADATA_KEY not in metadata:
        raise ValueError(f"{where}: no {METADATA_KEY!r} metadata (see curation/nsfw/head.py)")
    record = json.loads(metadata[METADATA_KEY])
    return HeadSpec(
        input_dim=int(record["input_dim"]),
        hidden=tuple(int(w) for w in record.get("hidden", ())),
        threshold=float(record.get("threshold", 0.5)),
        scorer=dict(record.get("scorer") or {}),
        fit=dict(record.get("fit") or {}),
    )


def head_from_bytes(data: bytes, where: str = "nsfw head") -> NsfwHead:
    """The head in a safetensors file's bytes; its tensors must match the sizes its spec names."""
    spec = spec_from_bytes(data, where)
    head = NsfwHead(spec)
    state = load(data)
    expected = head.state_dict()
    if set(state) != set(expected) or any(state[k].shape != expected[k].shape for k in expected):
        raise ValueError(
            f"{where}: tensors {sorted((k, tuple(v.shape)) for k, v in state.items())} do not "
            f"match a {spec.input_dim} -> {list(spec.hidden)} -> 1 head"
        )
    head.load_state_dict({k: v.float() for k, v in state.items()})
    return head.eval()


def load_head(url: str) -> NsfwHead:
    return head_from_bytes(fsio.read_bytes(url), url)


def fit_head(
    embeddings: np.ndarray,
    labels: Sequence[bool] | np.ndarray,
    settings: FitSettings = FitSettings(),
    seed: int = 0,
    scorer: dict[str, Any] | None = None,
) -> NsfwHead:
    """Fit a head on labelled embeddings (label True = unsafe): full-batch AdamW on the
    class-balanced logistic loss, a stratified held-out split measured at the end (in
    `spec.fit`). Same inputs and seed, same bytes."""
    x = np.asarray(embeddings, dtype=np.float32)
    y = np.asarray(labels, dtype=bool)
    if x.ndim != 2 or len(x) != len(y):
        raise ValueError(f"fit: {x.shape} embeddings for {len(y)} labels")
    if y.all() or not y.any():
        raise ValueError("fit: labels need both unsafe and safe examples")
    rng = np.random.default_rng(seed)
    held = np.zeros(len(y), dtype=bool)
    for cls in (False, True):
        rows = np.flatnonzero(y == cls)
        held[rng.permutation(rows)[: int(len(rows) * settings.holdout)]] = True
    train = ~held
    generator = torch.Generator().manual_seed(seed)
    spec = HeadSpec(x.shape[1], tuple(settings.hidden), settings.threshold, dict(scorer or {}))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
        head = NsfwHead(spec)
    inputs, targets = torch.from_numpy(x[train]), torch.from_numpy(y[train].astype(np.float32))
    positives = float(targets.sum())
    pos_weight = torch.tensor((len(targets) - positives) / positives)
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=pos_weight)
    optimizer = torch.optim.AdamW(
        head.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay
    )
    head.train()
    # A head this small trains fastest on one thread (500 rows: 0.4 CPU-s on one, 4.1 on two
    # threads of a loaded 2-core box), and one thread gives the same bytes on any machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for _ in range(settings.epochs):
            optimizer.zero_grad()
            loss = loss_fn(head(inputs), targets)
            loss.backward()
            optimizer.step()
    finally:
        torch.set_num_threads(threads)
    head.eval()
    if settings.max_false_removal is not None and (held & ~y).any():
        threshold = calibrated_threshold(
            head.probabilities(x[held & ~y]), settings.max_false_removal
        )
        spec = HeadSpec(spec.input_dim, spec.hidden, threshold, spec.scorer)
        head.spec = spec
    metrics = {
        "train_rows": int(train.sum()),
        "final_loss": round(float(loss.detach()), 6),
        **{f"train_{k}": v for k, v in evaluate(head, x[train], y[train]).items()},
    }
    if held.any():
        metrics.update({f"holdout_{k}": v for k, v in evaluate(head, x[held], y[held]).items()})
    fitted = HeadSpec(
        spec.input_dim,
        spec.hidden,
        spec.threshold,
        spec.scorer,
        {
            "settings": {**asdict(settings), "hidden": list(settings.hidden)},
            "seed": seed,
            **metrics,
        },
    )
    head.spec = fitted
    return head


def calibrated_threshold(safe_probabilities: np.ndarray, max_false_removal: float) -> float:
    """The lowest threshold t (drop P >= t) at which at most `max_false_removal` of these safe
    rows' probabilities reach t, kept inside (0, 1)."""
    p = np.sort(np.asarray(safe_probabilities, dtype=np.float64))[::-1]
    allowed = int(np.floor(max_false_removal * len(p) + 1e-9))
    lowest = float(np.nextafter(np.float32(0), np.float32(1)))
    if allowed >= len(p):
        return lowest
    # Above the (allowed + 1)-th highest safe probability: only the `allowed` ones above it drop.
    threshold = float(np.nextafter(np.float32(p[allowed]), np.float32(1)))
    return min(max(threshold, lowest), float(np.nextafter(np.float32(1), np.float32(0))))


def evaluate(head: NsfwHead, embeddings: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """Accuracy, recall on unsafe rows and false-removal rate on safe rows, at the threshold."""
    drop = head.probabilities(embeddings) >= head.spec.threshold
    unsafe, safe = labels.astype(bool), ~labels.astype(bool)
    return {
        "rows": int(len(labels)),
        "accuracy": round(float(np.mean(drop == unsafe)), 6),
        "unsafe_recall": round(float(drop[unsafe].mean()), 6) if unsafe.any() else None,
        "false_removal_rate": round(float(drop[safe].mean()), 6) if safe.any() else None,
    }
