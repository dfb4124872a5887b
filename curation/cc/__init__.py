"""Common Crawl → candidate image-text pairs.

snapshot (which files) → warc_reader (records, surviving damaged archives) → charset (how a page is
encoded) → html_images / wat (the <img> of a page, URLs resolved by urls) → text_filters → candidates
(the Parquet rows). extractor ties them together for one file; curation.stages.extract runs it on Ray.
"""
