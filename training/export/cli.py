"""`python -m training export --ckpt RUN --format open_clip|hf --out DIR` and
`python -m training import-siglip2 --hf DIR --out RUN`.

`export --format open_clip` prints the `python -m curation score` arguments that load the
exported encoder, so a trained round can score the pool for the next curation round.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

FORMATS = ("open_clip", "hf")


def add_commands(commands: argparse._SubParsersAction) -> None:
    export = commands.add_parser(
        "export", help="export a checkpoint to open_clip or HF transformers"
    )
    export.add_argument(
        "--ckpt", required=True, help="run folder, checkpoints/ folder or step folder"
    )
    export.add_argument("--format", required=True, choices=FORMATS)
    export.add_argument("--out", required=True, help="output folder")
    export.set_defaults(handler=run_export)
    imported = commands.add_parser(
        "import-siglip2", help="convert a local HF SigLIP 2 model folder into a checkpoint of ours"
    )
    imported.add_argument("--hf", required=True, help="local folder with config.json + safetensors")
    imported.add_argument("--out", required=True, help="run folder to write checkpoints/ into")
    imported.set_defaults(handler=run_import)


def run_export(options: argparse.Namespace) -> int:
    from training.export import require_siglip_layout
    from training.run_folder import load_encoder, resolve_checkpoint, tokenizer_for_checkpoint

    try:
        folder = resolve_checkpoint(options.ckpt)
    except FileNotFoundError as error:
        print(f"export: {error}", file=sys.stderr)
        return 2
    model = load_encoder(folder)
    state, cfg = model.state_dict(), model.cfg
    try:
        require_siglip_layout(cfg)
    except ValueError as error:
        print(f"export: {folder}: {error}", file=sys.stderr)
        return 2
    tokenizer = tokenizer_for_checkpoint(folder, cfg.text.context_length)
    out = Path(options.out)
    if options.format == "open_clip":
        from training.export.openclip import export_open_clip

        exported = export_open_clip(state, cfg, out, tokenizer)
        print(f"exported {folder} to open_clip folder {exported.folder}")
        print(f"open_clip name: {exported.open_clip_name()}")
        print("curation scorer arguments: " + shlex.join(exported.scorer_arguments()))
    else:
        from training.export.hf import export_hf

        written = export_hf(state, cfg, out, tokenizer)
        print(f"exported {folder} to Hugging Face transformers folder {written}")
    return 0


def run_import(options: argparse.Namespace) -> int:
    from training.export.hf import import_hf_siglip2

    try:
        folder = import_hf_siglip2(Path(options.hf), Path(options.out))
    except (FileNotFoundError, ValueError, KeyError) as error:
        print(f"import-siglip2: {error}", file=sys.stderr)
        return 2
    print(f"imported {options.hf} as checkpoint {folder}")
    return 0
