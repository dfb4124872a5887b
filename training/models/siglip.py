"""SigLIP 2: the two towers, the learnable temperature t and bias b, and the LocCa decoder."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from training.models.config import ModelConfig
from training.models.distill import DistillHeads
from training.models.locca import LocCaDecoder
from training.models.text import TextTower
from training.models.vision import VisionTower, patchify


class SigLIP2(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.vision = VisionTower(cfg.vision)
        self.text = TextTower(cfg.text, cfg.embed_dim)
        # Stored as log t: t = exp(logit_scale), initialised to t = 10.
        self.logit_scale = nn.Parameter(torch.tensor(cfg.init_logit_scale))
        self.logit_bias = nn.Parameter(torch.tensor(cfg.init_logit_bias))
        # Phase-2 heads live in the model so checkpoints, optimizers and DDP/FSDP see one module.
        self.distill_heads = (
            DistillHeads(cfg.distill, cfg.embed_dim, cfg.vision.width)
            if cfg.distill is not None
            else None
        )
        self.decoder = LocCaDecoder(
            cfg.decoder, vocab_size=cfg.decoder_vocab_size, memory_dim=cfg.vision.width
        )

    def encode_image(
        self,
        image: Tensor | None = None,
        *,
        patches: Tensor | None = None,
        patch_coords: Tensor | None = None,
        patch_mask: Tensor | None = None,
        token_mask: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Either `image [B, C, H, W]` or NaFlex `patches [B, N, p*p*C]` + `patch_coords [B, N, 2]`
        (+ `patch_mask [B, N]`, True for real patches). Returns (pooled [B, D], patch tokens
        [B, N, D]); both unnormalised."""
        if image is not None:
            if patches is not None:
                raise ValueError("give either image or patches, not both")
            patch_size = self.cfg.vision.patch_size
            patches, _ = patchify(image, patch_size)
            grid = (image.shape[-2] // patch_size, image.shape[-1] // patch_size)
            return self.vision(patches, token_mask=token_mask, grid_size=grid)
        if patches is None or patch_coords is None:
            raise ValueError("encode_image needs image, or patches together with patch_coords")
        return self.vision(patches, patch_coords, patch_mask, token_mask)

    def encode_text(self, tokens: Tensor) -> Tensor:
        return self.text(tokens)

    def forward(
        self,
        *,
        image: Tensor | None = None,
        patches: Tensor | None = None,
        patch_coords: Tensor | None = None,
        patch_mask: Tensor | None = None,
        token_mask: Tensor | None = None,
        text: Tensor | None = None,
        text_rows: Tensor | None = None,
        locca: dict[str, Tensor] | None = None,
        head_logits: bool = False,
        tips_mask: Tensor | None = None,
        local_crops: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """Everything a training step needs in one call, so DDP/FSDP hooks see every parameter
        used: "image_embeds", "patch_tokens", "logit_scale", "logit_bias", and when asked
        "text_embeds" [B, D] and "locca_token_losses" (see LocCaDecoder.token_losses; `locca` holds
        decoder rows tokens/prefix_mask/target_mask/parallel [R, L] and image_index [R], the image
        each row reads). `text_rows` (indices) encodes only those rows' texts and leaves zeros in
        the others: a grounding sample's text never reaches the contrastive loss, so the tower
        skips it (a quarter of the text tower's work at the presets' grounding share).

        Phase 2 (needs cfg.distill): `head_logits` adds the teacher-side "silc_logits" [B, K] and
        "tips_logits" [B, N, Kp] of this view; `tips_mask` [B, N] runs a second pass over the
        same image with those patches replaced by the mask token and adds
        "tips_student_logits" [B, N, Kp]; `local_crops` [B, V, C, h, w] adds
        "silc_student_logits" [B, V, K]."""
        pooled, tokens = self.encode_image(
            image,
            patches=patches,
            patch_coords=patch_coords,
            patch_mask=patch_mask,
            token_mask=token_mask,
        )
        out = {
            "image_embeds": pooled,
            "patch_tokens": tokens,
            "logit_scale": self.logit_scale,
            "logit_bias": self.logit_bias,
        }
        if text is not None and text_rows is not None and 0 < text_rows.numel() < text.shape[0]:
            embeds = self.encode_text(text[text_rows])
            out["text_embeds"] = embeds.new_zeros(text.shape[0], embeds.shape[1]).index_copy(
                0, text_rows, embeds
            )
        elif text is not None:
            out["text_embeds"] = self.encode_text(text)
        if locca is not None:
            image_index = locca["image_index"]
            memory_mask = patch_mask[image_index] if patch_mask is not None else None
            out["locca_token_losses"] = self.decoder.token_losses(
                tokens[image_index],
                locca["tokens"],
                locca["prefix_mask"],
                locca["target_mask"],
                locca["parallel"],
                memory_mask,
            )
        if head_logits or tips_mask is not None or local_crops is not None:
            heads = self._require_heads()
            if head_logits:
                out["silc_logits"] = heads.silc(pooled)
                out["tips_logits"] = heads.tips(tokens)
            if tips_mask is not None:
                _, masked_tokens = self.encode_image(
                    image,
                    patches=patches,
                    patch_coords=patch_coords,
                    patch_mask=patch_mask,
                    token_mask=tips_mask,
                )
                out["tips_student_logits"] = heads.tips(masked_tokens)
            if local_crops is not None:
                batch, views = local_crops.shape[:2]
                crops_pooled, _ = self.encode_image(local_crops.flatten(0, 1))
                out["silc_student_logits"] = heads.silc(crops_pooled).view(batch, views, -1)
        return out

    def _require_heads(self) -> DistillHeads:
        if self.distill_heads is None:
            raise ValueError("this model has no distillation heads (ModelConfig.distill is None)")
        return self.distill_heads
