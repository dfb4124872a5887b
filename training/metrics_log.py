"""Training metrics to a JSONL file (one record per logged step) and to TensorBoard.

The JSONL file is the source of truth (the dashboard and tests read it); TensorBoard is for
looking at curves. Only rank 0 writes. Records are appended and flushed at once, so a killed run
keeps everything it logged, and a resumed run appends after it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any


class MetricsLogger:
    def __init__(self, out_dir: Path, enabled: bool, tensorboard: bool = True) -> None:
        self.enabled = enabled
        self.writer = None
        self.handle = None
        if not enabled:
            return
        out_dir.mkdir(parents=True, exist_ok=True)
        self.path = out_dir / "metrics.jsonl"
        self.handle = open(self.path, "a")  # noqa: SIM115 (open for the whole run; closed in close())
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(out_dir / "tensorboard"))

    def log(self, step: int, values: dict[str, Any]) -> None:
        if not self.enabled:
            return
        record = {"step": step, **{k: _jsonable(v) for k, v in values.items()}}
        self.handle.write(json.dumps(record) + "\n")
        self.handle.flush()
        if self.writer is not None:
            for key, value in values.items():
                if isinstance(value, (int, float)) and math.isfinite(value):
                    self.writer.add_scalar(key, value, step)

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()
        if self.writer is not None:
            self.writer.close()


def _jsonable(value: Any) -> Any:
    # JSON has no NaN; a missing LocCa task in a batch logs as null.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def read_metrics(path: Path) -> list[dict[str, Any]]:
    with open(path) as handle:
        return [json.loads(line) for line in handle if line.strip()]


# Dense bf16 tensor-core peaks (FLOP/s) of accelerators we expect; MFU is omitted elsewhere.
PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "B200": 2250e12, "A100": 312e12, "L40S": 362e12}


def peak_flops(device_name: str) -> float | None:
    for marker, flops in PEAK_BF16_FLOPS.items():
        if marker in device_name:
            return flops
    return None


def _matmul_params(module) -> int:
    """Parameters that multiply activations (embedding tables are lookups, not matmuls)."""
    import torch

    lookup = {
        id(p) for m in module.modules() if isinstance(m, torch.nn.Embedding) for p in m.parameters()
    }
    return sum(p.numel() for p in module.parameters() if id(p) not in lookup)


def train_flops_per_sample(
    model, image_tokens: int, text_tokens: int, decoder_rows: int, decoder_tokens: int
) -> float:
    """Forward + backward FLOPs of one sample, PaLM-style: 6 · matmul params · tokens per tower,
    plus 6 · 2 · layers · width · (tokens attended) for attention scores and values.

    `model` is a SigLIP2; the LocCa decoder runs `decoder_rows` sequences per image (one per task)
    that self-attend and cross-attend to the image tokens.
    """
    vision, text, decoder = model.cfg.vision, model.cfg.text, model.cfg.decoder
    dense = (
        _matmul_params(model.vision) * image_tokens
        + _matmul_params(model.text) * text_tokens
        + _matmul_params(model.decoder) * decoder_rows * decoder_tokens
    )
    attention = (
        vision.depth * vision.width * image_tokens**2
        + text.depth * text.width * text_tokens**2
        + decoder.depth
        * decoder.width
        * decoder_rows
        * decoder_tokens
        * (decoder_tokens + image_tokens)
    )
    return 6.0 * dense + 12.0 * attention
