"""Export a trained SigLIP2 to other libraries' formats (Hugging Face transformers, open_clip)
and import released SigLIP 2 weights from a local Hugging Face directory."""
