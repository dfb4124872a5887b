"""The curation dashboard: a small local web app over a run folder's stats records and sidecars.

It reads only what the stages wrote (`_stats/STAGE/SHARD.json`, Parquet sidecars, pool tars,
training logs) and keeps no database of its own; aggregates are computed with pyarrow on first
use and cached for the life of the process.
"""
