"""The tokenizer class a Hugging Face export ships beside its tokenizer.json (copied into the
export folder; it imports only transformers).

transformers builds its Gemma-style `Siglip2Tokenizer` for every "siglip2" model folder, which
cannot express our BPE. A folder whose tokenizer_config.json has an `auto_map` entry is exempt:
without trust_remote_code, AutoTokenizer then loads tokenizer.json as it is (TokenizersBackend);
with trust_remote_code=True it loads the class `auto_map` names, so the file must be there (or
AutoTokenizer raises OSError). The class also caps the padding length at the text tower's
position count, which the zero-shot-image-classification pipeline needs for a tower with fewer
than 64 positions (a preset overridden with a shorter text.context_length; every preset has 64):
for SigLIP models it always pads to 64 tokens.
"""

try:
    from transformers import TokenizersBackend
except ImportError:  # transformers 4: the fast tokenizer class had this name
    from transformers import PreTrainedTokenizerFast as TokenizersBackend


class OpenVisionTokenizer(TokenizersBackend):
    """Our tokenizer.json as is; padding and truncation lengths capped at model_max_length."""

    def __call__(self, *args, **kwargs):
        if kwargs.get("max_length") is not None:
            kwargs["max_length"] = min(kwargs["max_length"], self.model_max_length)
        return super().__call__(*args, **kwargs)
