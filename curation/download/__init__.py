"""Downloading candidate image URLs into the image pool: safely, politely, resumably.

`fetcher` fetches one URL (address policy, robots.txt, redirects, retries, limits); `imaging`
decodes, checks and resizes; `shard_writer` commits a WebDataset tar plus its Parquet sidecar;
`shard_download` ties them together for one pool shard, and `shard_tasks` are the stage's tasks.
`plan` partitions the candidates by host into shards, so that `politeness` (per-host connections,
rate and Crawl-delay, enforced inside the one task that owns a host) holds for the whole cluster.
The stage and CLI live in `curation.stages.download`.
"""
