"""The NSFW filter: a small MLP head on the scorer's image embeddings (head.py), applied per pool
shard and fitted from labelled pool rows (shards.py); the stage is curation/stages/nsfw.py."""
