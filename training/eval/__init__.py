"""Evaluation of trained encoders on CLIP_benchmark-layout WebDataset sets: zero-shot
classification, image-text retrieval, and referring-expression grounding (ARef)."""
