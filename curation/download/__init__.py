"""Downloading candidate image URLs into the image pool: safely, politely, resumably.

`fetcher` fetches one URL (address policy, robots.txt, redirects, retries, limits); `imaging`
decodes, checks and resizes; `shard_writer` commits a WebDataset tar plus its Parquet sidecar;
`shard_download` ties them together for one pool shard. The stage and CLI live in
`curation.stages.download`.
"""
