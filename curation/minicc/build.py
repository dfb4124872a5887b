"""`minicc build`: plan the world from a seed, render it, and write every artefact under one root.

DIR/crawl-data/CC-MAIN-MINI-<seed>/...   WARC + WAT files, warc.paths.gz, wat.paths.gz
DIR/www/<host>/<path>, DIR/www/routes.json   what the server serves, and how
DIR/truth.parquet, DIR/truth_images.parquet  the answer key
DIR/eval/<set>/...                        held-out evaluation sets (CLIP_benchmark layout)
DIR/grounding/{00000..}.tar               grounding shards
DIR/world.json                            hosts, allow-list, concepts, counts
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

from curation import fsio
from curation.minicc import evalsets, faults
from curation.minicc.catalog import plan_catalog
from curation.minicc.grounding import write_grounding_shards
from curation.minicc.pages import plan_pages
from curation.minicc.scales import (
    ALLOWED_CIDR,
    DEFAULT_PORT,
    FORBIDDEN_ADDRESSES,
    HOSTS,
    get_scale,
)
from curation.minicc.snapshot import planned_page_faults, snapshot_name, write_snapshot
from curation.minicc.truth import write_truth
from curation.minicc.wat import IMG_LINK_ATTRIBUTES
from curation.minicc.world import ConceptSampler, concept_list
from curation.minicc.www import render_catalog, write_routes

WORLD_FILE = "world.json"
# Bump whenever a build's content changes (scenes, captions, phrases, eval sets, layout). Tools
# that reuse a built world (the demo, the quality benchmarks) check it: a world from an older
# generator silently gave them outdated grounding phrases. Worlds without the field are 1.
# 5: the unsafe stand-in's rings cover the whole backdrop (render._draw_unsafe_pattern).
# 6: good captions name the kinds only; shapes 1.4x larger; scenes drawn on plain, gradient or
#    noisy backdrops (no stripes or checks) (issue 22: a world whose concepts `tiny` can learn).
GENERATOR_VERSION = 6
_BUILD_OUTPUTS = (
    "crawl-data",
    "www",
    "eval",
    "grounding",
    "truth.parquet",
    "truth_images.parquet",
    WORLD_FILE,
)


def _prepare_output(out: Path) -> None:
    """Refuse to write into a folder that holds anything but an earlier minicc build."""
    out.mkdir(parents=True, exist_ok=True)
    entries = {p.name for p in out.iterdir()}
    foreign = entries - set(_BUILD_OUTPUTS) - {"requests.jsonl", "server.json"}
    if foreign:
        raise ValueError(
            f"{out} holds files that are not a minicc build ({sorted(foreign)[:5]}); "
            "choose an empty or new folder"
        )
    for name in _BUILD_OUTPUTS:
        fsio.remove(str(out / name))


def _counts(
    occurrences: list[dict],
    images: list[dict],
    pages,
    snapshot_files,
    eval_counts: dict[str, int],
    grounding: int,
) -> dict[str, Any]:
    pairs = [r for r in occurrences if r["image_url"] and r["text"] and r["page_fault"] is None]
    fault_urls = Counter(r["fault"] for r in images if r["fault"])
    # Concepts as the pairs show them (what MetaCLIP balancing sees): head and long tail.
    shapes_by_url = {r["url"]: list(zip(r["colours"], r["kinds"])) for r in images}
    pair_shapes = [shape for r in pairs for shape in shapes_by_url[r["image_url"]]]
    fault_refs = Counter(r["fault"] for r in occurrences if r["fault"])
    return {
        "pages": len(pages),
        "warc_files": len(snapshot_files.warc_paths),
        "img_tags": len(occurrences),
        "img_tags_with_url": sum(1 for r in occurrences if r["image_url"]),
        "pairs": len(pairs),
        "junk_tags": sum(1 for r in occurrences if r["url_form"] == "junk"),
        "image_urls": len(images),
        "pictures": len({r["image_id"] for r in images if r["image_id"]}),
        "scenes": len({r["scene_id"] for r in images}),
        "variants": dict(Counter(r["variant"] for r in images)),
        "eval_contaminant_urls": sum(1 for r in images if r["is_eval_contaminant"]),
        "fault_urls": dict(sorted(fault_urls.items())),
        "fault_references": dict(sorted(fault_refs.items())),
        "page_faults": dict(Counter(p.page_fault for p in pages if p.page_fault)),
        "caption_kinds": dict(Counter(r["caption_kind"] for r in occurrences)),
        "unsafe_urls": sum(1 for r in images if r["unsafe"]),
        "caption_langs": dict(Counter(r["lang"] or "none" for r in occurrences)),
        "page_charsets": dict(Counter(f"{p.charset}/{p.charset_declared}" for p in pages)),
        "url_forms": dict(Counter(r["url_form"] for r in occurrences)),
        "pair_kinds": dict(Counter(k for _, k in pair_shapes).most_common()),
        "pair_colours": dict(Counter(c for c, _ in pair_shapes).most_common()),
        "pair_phrases_distinct": len({f"{c} {k}" for c, k in pair_shapes}),
        "eval": eval_counts,
        "grounding_samples": grounding,
    }


def build_world(
    out: Path,
    seed: int = 0,
    scale_name: str = "tiny",
    port: int = DEFAULT_PORT,
    processes: int | None = None,
) -> dict[str, Any]:
    """Build the whole mini Common Crawl under `out`; returns the world description."""
    if not 1 <= port <= 65535:
        raise ValueError(f"port must be in 1..65535, got {port}")
    scale = get_scale(scale_name)
    processes = processes or min(os.cpu_count() or 1, 4)
    out = Path(out)
    _prepare_output(out)
    started = last = time.perf_counter()
    timings: dict[str, float] = {}

    def lap(name: str) -> None:
        nonlocal last
        now = time.perf_counter()
        timings[name], last = round(now - last, 3), now

    concepts = ConceptSampler(seed)
    eval_plans = evalsets.plan_eval_sets(seed, scale.eval_per_set)
    catalog = plan_catalog(
        seed, scale, port, concepts, evalsets.contaminant_scenes(eval_plans, scale.contaminants)
    )
    page_faults = planned_page_faults(scale.pages, scale.pages_per_warc)
    pages = plan_pages(seed, scale, port, catalog, page_faults)
    lap("plan")
    www_root = out / "www"
    rendered = render_catalog(catalog, www_root, processes)
    write_routes(catalog, www_root, port)
    lap("render_www")
    snapshot_files = write_snapshot(out, seed, pages, scale.pages_per_warc)
    lap("warc_wat")
    occurrences, images = write_truth(out, pages, catalog, rendered)
    lap("truth")
    eval_counts = evalsets.write_eval_sets(out, eval_plans, processes)
    grounding = write_grounding_shards(out, catalog, rendered, scale.grounding_shard_size)
    lap("eval_grounding")
    world = {
        "generator_version": GENERATOR_VERSION,
        "seed": seed,
        "scale": scale.name,
        "port": port,
        "snapshot": snapshot_name(seed),
        "hosts": list(HOSTS),
        "base_urls": [f"http://{h}:{port}" for h in HOSTS],
        "allowed_cidr": ALLOWED_CIDR,
        "forbidden_addresses": list(FORBIDDEN_ADDRESSES),
        "warc_paths": f"crawl-data/{snapshot_name(seed)}/warc.paths.gz",
        "wat_paths": f"crawl-data/{snapshot_name(seed)}/wat.paths.gz",
        "robots": {
            "agent_token": faults.ROBOTS_AGENT_TOKEN,
            "disallowed_for_all": faults.DISALLOWED_FOR_ALL,
            "disallowed_for_agent": faults.DISALLOWED_FOR_AGENT,
            "hosts_without_robots_txt": [HOSTS[0]],
        },
        "faults": faults.FAULT_KINDS,
        "slow_delay_s": faults.SLOW_DELAY_S,
        "url_normalisation": "urljoin(<base href> or page URL, raw attribute), fragment dropped",
        "wat_img_link_paths": [f"IMG@/{a}" for a in IMG_LINK_ATTRIBUTES],
        "concepts": concept_list(),
        "concept_ranking": {"kinds": concepts.kind_ranking, "colours": concepts.colour_ranking},
        "counts": _counts(occurrences, images, pages, snapshot_files, eval_counts, grounding),
    }
    (out / WORLD_FILE).write_text(json.dumps(world, indent=1, ensure_ascii=False))
    world["build_seconds"] = dict(timings, total=round(time.perf_counter() - started, 3))
    return world


def stale_world_reason(root: Path, seed: int | None = None, scale: str | None = None) -> str | None:
    """Why the build under `root` is not what this code would build now (missing, another
    generator version, or another seed or scale when given), or None when it is current."""
    path = Path(root) / WORLD_FILE
    if not path.exists():
        return f"{path} not found"
    world = json.loads(path.read_text())
    version = world.get("generator_version", 1)
    if version != GENERATOR_VERSION:
        return (
            f"{root} was built by minicc generator version {version}; this code builds "
            f"version {GENERATOR_VERSION}"
        )
    for name, wanted in (("seed", seed), ("scale", scale)):
        if wanted is not None and world.get(name) != wanted:
            return f"{root} was built with {name} {world.get(name)!r}, not {wanted!r}"
    return None


def load_world(root: Path) -> dict[str, Any]:
    path = Path(root) / WORLD_FILE
    if not path.exists():
        raise FileNotFoundError(
            f"{path} not found: build the world first (python -m curation minicc build --out DIR)"
        )
    return json.loads(path.read_text())
