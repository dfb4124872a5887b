"""Open datasets beside Common Crawl: published URL lists and human-annotated grounding sets.

`url_lists` maps LAION / DataComp / any Parquet URL list onto the candidates schema, so the same
dedup → download → curate path serves them. `formats/` reads each grounding dataset's native
annotation files, `boxes` turns every box convention into normalised xyxy, `grounding_shards`
writes the trainer's grounding shards, `mix` is the per-source mixing config, `face_blur` blurs
given face boxes in a pool.
"""
