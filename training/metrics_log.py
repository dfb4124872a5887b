"""Training metrics to a JSONL file (one record per logged step) and to TensorBoard.

The JSONL file is the source of truth (the dashboard and tests read it); TensorBoard is for
looking at curves. Only rank 0 writes, into a local folder: the run folder itself when it is
local, else a mirror that is copied to the run URL (metrics.jsonl at every record, TensorBoard
at every `sync()` and at the end). Records are appended and flushed at once, so a killed run
keeps everything it logged. A run that starts at step S (a resume from the checkpoint of step
S, or 0) first drops the records after S that a killed segment left, so the log holds each
step once; TensorBoard is told to purge its events after S likewise.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from training import run_storage

METRICS_FILE, TENSORBOARD_DIR = "metrics.jsonl", "tensorboard"


class MetricsLogger:
    def __init__(
        self, run_url: str | Path, enabled: bool, tensorboard: bool = True, start_step: int = 0
    ) -> None:
        self.enabled = enabled
        self.writer = None
        self.handle = None
        if not enabled:
            return
        self.run_url = str(run_url)
        self.remote = not run_storage.is_local(self.run_url)
        local = run_storage.local_mirror(self.run_url)
        local.mkdir(parents=True, exist_ok=True)
        self.path = local / METRICS_FILE
        if self.remote:
            self.path.unlink(missing_ok=True)
            run_storage.download(run_storage.join(self.run_url, METRICS_FILE), self.path)
            if not (local / TENSORBOARD_DIR).exists():
                run_storage.download(
                    run_storage.join(self.run_url, TENSORBOARD_DIR), local / TENSORBOARD_DIR
                )
        truncate_metrics(self.path, start_step)
        self.handle = open(self.path, "a")  # noqa: SIM115 (open for the whole run; closed in close())
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(
                log_dir=str(local / TENSORBOARD_DIR), purge_step=start_step or None
            )

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
        if self.remote:
            run_storage.upload(self.path, run_storage.join(self.run_url, METRICS_FILE))

    def sync(self) -> None:
        """Copy the TensorBoard files to the run URL (a no-op for a local run)."""
        if not self.enabled or not self.remote or self.writer is None:
            return
        self.writer.flush()
        run_storage.upload(
            Path(self.writer.log_dir), run_storage.join(self.run_url, TENSORBOARD_DIR)
        )

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()
        if self.writer is not None:
            self.writer.close()
        self.sync()


def _jsonable(value: Any) -> Any:
    # JSON has no NaN; a missing LocCa task in a batch logs as null.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def truncate_metrics(path: Path, last_step: int) -> None:
    """Keep only the records up to `last_step` (the ones a killed segment logged after its last
    checkpoint are logged again by the resumed run)."""
    if not path.exists():
        return
    records = [r for r in read_metrics(path) if r["step"] <= last_step]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def read_metrics(path: Path | str) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl (local path or URL), each step once: a record whose step
    is not after the previous one's starts a resumed segment, which replaces what the killed
    segment logged from that step on (logs written before resumes truncated them)."""
    records: list[dict[str, Any]] = []
    for line in run_storage.read_text(path).splitlines():
        if line.strip():
            append_record(records, json.loads(line))
    return records


def append_record(records: list[dict[str, Any]], record: dict[str, Any]) -> None:
    """Append the next record of a log to `records`, keeping each step once: a record whose step
    is not after the last one's starts a resumed segment and replaces the records from its step on."""
    while records and records[-1]["step"] >= record["step"]:
        records.pop()
    records.append(record)


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
