"""The built-in mini Common Crawl: a deterministic procedural web on 127.0.0.0/8.

`build.build_world` writes the snapshot (WARC/WAT), the served files, the truth tables, the
evaluation sets and the grounding shards; `server.serve_world` serves the images with faults.
"""
