"""CLIP scoring of the pool: model loading from local weights, image decoding, the scoring actors,
and the embedding-space tools (near-duplicate search) that reuse the saved embeddings."""
