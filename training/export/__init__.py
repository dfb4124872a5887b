"""Export a trained SigLIP2 to other libraries' formats (Hugging Face transformers, open_clip)
and import released SigLIP 2 weights from a local Hugging Face directory."""


def require_siglip_layout(cfg) -> None:
    """Both exports write SigLIP's layout, attention-pooling head included: refuse (ValueError)
    an encoder that pools its image tokens otherwise, before anything is written."""
    if cfg.vision.pool != "map":
        raise ValueError(
            f"the encoder pools its image tokens by {cfg.vision.pool!r}; open_clip and Hugging "
            "Face SigLIP layouts hold the attention-pooling head (vision.pool=map) only"
        )
