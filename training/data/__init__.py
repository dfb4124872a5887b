"""Phase-1 data: WebDataset shards → exactly resumable mixed image-text / grounding batches."""
