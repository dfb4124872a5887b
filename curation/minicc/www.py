"""Render the catalog's pictures into DIR/www/ (in parallel) and write the server's route table."""

from __future__ import annotations

import json
from pathlib import Path

from curation.minicc.catalog import Box, Catalog, RenderJob
from curation.minicc.faults import robots_txt
from curation.minicc.parallel import ordered_map
from curation.minicc.render import encode, render_scene
from curation.minicc.scales import FORBIDDEN_ADDRESSES, HOSTS

ROUTES_FILE = "routes.json"
# image_id -> (width, height, boxes)
RenderedInfo = dict[str, tuple[int, int, list[Box]]]


def _crop_boxes(
    boxes: list[Box], full: tuple[int, int], crop: tuple[int, int, int, int]
) -> list[Box]:
    """Re-express normalised boxes of the full render in the cropped picture's frame."""
    w, h = full
    x0, y0, x1, y1 = crop
    cw, ch = x1 - x0, y1 - y0
    out = []
    for bx0, by0, bx1, by1 in boxes:
        px0, px1 = [min(max(v * w - x0, 0), cw) / cw for v in (bx0, bx1)]
        py0, py1 = [min(max(v * h - y0, 0), ch) / ch for v in (by0, by1)]
        out.append((px0, py0, px1, py1))
    return out


def render_job(job: RenderJob, www_root: str) -> RenderedInfo:
    """Draw the job's scene once and write each requested output file."""
    rendered = render_scene(job.scene)
    info: RenderedInfo = {}
    for output in job.outputs:
        image, boxes = rendered.image, rendered.boxes
        if output.crop is not None:
            image = image.crop(output.crop)
            boxes = _crop_boxes(boxes, rendered.image.size, output.crop)
        if image.size != output.size:
            image = image.resize(output.size, resample=3)  # BICUBIC
        target = Path(www_root) / output.file
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(encode(image, output.fmt, output.quality))
        info[output.image_id] = (image.width, image.height, [tuple(b) for b in boxes])
    return info


def _render_job_star(args: tuple[RenderJob, str]) -> RenderedInfo:
    return render_job(*args)


def render_catalog(catalog: Catalog, www_root: Path, processes: int) -> RenderedInfo:
    """Render every job, then write the static (non-rendered) files."""
    info: RenderedInfo = {}
    work = [(job, str(www_root)) for job in catalog.jobs]
    for result in ordered_map(_render_job_star, work, processes, "render web images"):
        info.update(result)
    for relative, data in catalog.static_files.items():
        target = www_root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return info


def write_routes(catalog: Catalog, www_root: Path, port: int) -> Path:
    """The route table the server loads: per host its robots.txt and path -> route."""
    table = {
        "port": port,
        "hosts": {
            host: {"robots_txt": robots_txt(index), "routes": catalog.routes[host]}
            for index, host in enumerate(HOSTS)
        },
        "forbidden_addresses": list(FORBIDDEN_ADDRESSES),
    }
    path = www_root / ROUTES_FILE
    path.write_text(json.dumps(table, indent=1, sort_keys=True))
    return path
