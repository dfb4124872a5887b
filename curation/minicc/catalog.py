"""The image side of the mini web: every image URL, what it serves, and what must be rendered.

`plan_catalog` decides, from the seed alone, the scenes, their URLs on the simulated hosts, the
near-duplicate and srcset variants, the planted eval contaminants and the fault URLs, and the
route (served behaviour) of every path. Nothing is rendered here; `RenderJob`s say what to draw.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace

import numpy as np

from curation.minicc import faults
from curation.minicc.faults import FAULT_KINDS, PICTURE_BEARING_FAULTS, Route
from curation.minicc.scales import FORBIDDEN_ADDRESSES, HOSTS, Scale
from curation.minicc.world import (
    ConceptSampler,
    Scene,
    contrast_sibling,
    sample_scene,
    shapeless_scene,
)

Box = tuple[float, float, float, float]

NEAR_DUP_SHARE = 0.12
# Share of web scenes drawn as a hard negative of the scene before them (contrast_sibling: one
# shape's kind changed, all else equal), so captions must be read for their kinds.
CONTRAST_SHARE = 0.3
# Share of web scenes that carry the abstract "unsafe" pattern (truth column `unsafe`).
UNSAFE_SHARE = 0.05
# Bad pictures, per web scene: flat blank images, ad-banner strips, and icons too small to learn
# from (long side TINY_LONG_SIDE px). None has a good caption but a tiny one.
BAD_PICTURE_SHARES: dict[str, float] = {"blank": 0.02, "banner": 0.02, "tiny": 0.02}
TINY_LONG_SIDE = (16, 40)
SRCSET_SHARE = 0.10
PNG_SHARE = 0.12
NEAR_DUP_VARIANTS: tuple[str, ...] = ("copy", "reencode", "resize", "crop")
SRCSET_FACTORS: tuple[float, ...] = (0.25, 0.5)
# Faults whose file exists (so it is rendered) but whose fetch never yields the picture.
_DEAD_WITH_FILE = frozenset({"truncated"})
BLANK_GIF_PATH = "/static/blank.gif"
# The smallest valid GIF: 1x1 transparent pixel (the lazy-loading placeholder).
BLANK_GIF = bytes.fromhex(
    "47494638396101000100800000000000ffffff21f90401000000002c00000000010001000002024401003b"
)

_SITE_STYLES: tuple[str, ...] = (
    "/img/{y}/{m:02d}/{slug}.{ext}",
    "/media/uploads/{slug}.{ext}",
    "/photos/{n}/{slug}.{ext}",
    "/assets/images/{slug}.{ext}",
    "/cdn/i/{hex}.{ext}",
    "/wp-content/uploads/{y}/{m:02d}/{slug}.{ext}",
    "/gallery/full/{slug}.{ext}",
    "/static/pics/{hex}.{ext}",
)


@dataclass
class WebImage:
    """One image URL that pages may reference (a row of truth_images.parquet)."""

    url: str
    host: str
    path: str
    scene: Scene  # what the picture shows, and what a good caption describes
    image_id: str | None  # the picture a successful fetch yields; None when none can be had
    # original | copy | reencode | resize | crop | srcset_small | contaminant | fault
    # | blank | banner | tiny
    variant: str
    fault: str | None = None
    final_url: str | None = None  # where a redirect chain ends
    eval_key: str | None = None  # set on planted evaluation images
    width: int | None = None
    height: int | None = None
    boxes: list[Box] | None = None

    @property
    def live(self) -> bool:
        return self.image_id is not None


@dataclass
class RenderOutput:
    file: str  # relative to www/
    image_id: str
    fmt: str
    quality: int
    size: tuple[int, int]  # final pixel size after crop and resize
    crop: tuple[int, int, int, int] | None = None  # pixel box taken from the full render


@dataclass
class RenderJob:
    scene: Scene
    outputs: list[RenderOutput]


@dataclass
class Catalog:
    images: list[WebImage] = field(default_factory=list)
    # primary URL -> smaller srcset candidates, smallest first, with their pixel widths
    srcset: dict[str, list[tuple[WebImage, int]]] = field(default_factory=dict)
    routes: dict[str, dict[str, Route]] = field(default_factory=dict)
    jobs: list[RenderJob] = field(default_factory=list)
    static_files: dict[str, bytes] = field(default_factory=dict)
    # every URL a page must reference at least once (srcset candidates ride along in srcset)
    referenceable: list[WebImage] = field(default_factory=list)
    # fault-free URLs for the remaining references, most popular first
    popularity: list[WebImage] = field(default_factory=list)


def www_file(host: str, path: str) -> str:
    return f"{host}{path}"


class _CatalogPlanner:
    def __init__(self, seed: int, scale: Scale, port: int, concepts: ConceptSampler) -> None:
        self.seed, self.scale, self.port, self.concepts = seed, scale, port, concepts
        self.rng = np.random.default_rng([seed, 11])
        self.catalog = Catalog(routes={h: {} for h in HOSTS})
        self.serial = 0
        self.scene_count = 0

    # -- naming -------------------------------------------------------------------------------
    def url(self, host: str, path: str) -> str:
        return f"http://{host}:{self.port}{path}"

    def new_path(self, host: str, scene: Scene, ext: str, prefix: str = "") -> str:
        self.serial += 1
        n = self.serial
        digest = hashlib.sha1(f"{self.seed}:{n}".encode()).hexdigest()[:12]
        first = scene.shapes[0] if scene.shapes else None
        slug_choice = self.rng.random()
        slug = (
            f"{first.colour}-{first.kind}-{n}"
            if first is not None and slug_choice < 0.4
            else f"DSC{n:05d}"
            if slug_choice < 0.6
            else f"pic-{n}"
        )
        style = (
            _SITE_STYLES[HOSTS.index(host) % len(_SITE_STYLES)]
            if host in HOSTS
            else "/internal/{hex}.{ext}"
        )
        path = prefix + style.format(
            y=2015 + n % 10, m=1 + n % 12, n=n % 997, slug=slug, hex=digest, ext=ext
        )
        if path in self.catalog.routes.get(host, {}):
            raise AssertionError(f"path collision on {host}: {path}")
        return path

    def new_scene(self, previous: Scene | None = None) -> Scene:
        """A web scene; after `previous`, a CONTRAST_SHARE chance of being its hard negative."""
        index = self.scene_count
        self.scene_count += 1
        rng = np.random.default_rng([self.seed, 21, index])
        if previous is not None and previous.shapes and rng.random() < CONTRAST_SHARE:
            scene = contrast_sibling(rng, previous, f"s{index:06d}")
        else:
            scene = sample_scene(rng, f"s{index:06d}", self.concepts)
        return replace(scene, unsafe=bool(rng.random() < UNSAFE_SHARE))

    def random_host(self, with_robots: bool = False) -> str:
        hosts = HOSTS[1:] if with_robots else HOSTS  # HOSTS[0] has no robots.txt
        return hosts[int(self.rng.integers(len(hosts)))]

    # -- building blocks ----------------------------------------------------------------------
    def add_served_picture(
        self,
        scene: Scene,
        image_id: str,
        variant: str,
        job: RenderJob,
        *,
        host: str | None = None,
        fmt: str = "jpeg",
        quality: int = 88,
        resize: float = 1.0,
        crop_fraction: float = 0.0,
        prefix: str = "",
        route_extra: Route | None = None,
        fault: str | None = None,
        eval_key: str | None = None,
    ) -> WebImage:
        host = host or self.random_host()
        path = self.new_path(host, scene, "png" if fmt == "png" else "jpg", prefix)
        crop = None
        w, h = scene.width, scene.height
        if crop_fraction:
            dx, dy = round(w * crop_fraction), round(h * crop_fraction)
            crop = (dx, dy, w - dx, h - dy)
            w, h = w - 2 * dx, h - 2 * dy
        size = (max(1, round(w * resize)), max(1, round(h * resize)))
        file = www_file(host, path)
        job.outputs.append(
            RenderOutput(
                file=file, image_id=image_id, fmt=fmt, quality=quality, size=size, crop=crop
            )
        )
        route: Route = {"file": file, "content_type": f"image/{fmt}"}
        route.update(route_extra or {})
        if fault:
            route["fault"] = fault
        self.catalog.routes[host][path] = route
        image = WebImage(
            url=self.url(host, path),
            host=host,
            path=path,
            scene=scene,
            image_id=image_id if fault not in _DEAD_WITH_FILE else None,
            variant=variant,
            fault=fault,
            eval_key=eval_key,
            width=size[0],
            height=size[1],
        )
        self.catalog.images.append(image)
        return image

    def add_unserved(self, scene: Scene, fault: str, host: str, route: Route | None) -> WebImage:
        path = self.new_path(host, scene, "jpg")
        if route is not None:
            self.catalog.routes[host][path] = {**route, "fault": fault}
        image = WebImage(
            url=self.url(host, path),
            host=host,
            path=path,
            scene=scene,
            image_id=None,
            variant="fault",
            fault=fault,
        )
        self.catalog.images.append(image)
        return image

    # -- the plan -----------------------------------------------------------------------------
    def plan(self, contaminant_scenes: list[tuple[str, Scene]]) -> Catalog:
        originals: list[WebImage] = []
        for _ in range(self.scale.scenes):
            previous = originals[-1].scene if originals else None
            originals.append(self.plan_scene_family(previous))
        for kind, share in BAD_PICTURE_SHARES.items():
            for _ in range(round(share * self.scale.scenes)):
                self.plan_bad_picture(kind)
        for kind in FAULT_KINDS:
            for _ in range(self.scale.urls_per_fault):
                self.plan_fault(kind, originals)
        for number, (eval_key, scene) in enumerate(contaminant_scenes):
            job = RenderJob(scene=scene, outputs=[])
            self.catalog.jobs.append(job)
            self.add_served_picture(
                scene,
                f"c{number:05d}",
                "contaminant",
                job,
                quality=75,
                resize=0.9,
                eval_key=eval_key,
            )
        for host in HOSTS:
            self.catalog.routes[host][BLANK_GIF_PATH] = {
                "file": "static/blank.gif",
                "content_type": "image/gif",
            }
        self.catalog.static_files["static/blank.gif"] = BLANK_GIF
        self.catalog.referenceable = [
            im for im in self.catalog.images if im.variant != "srcset_small"
        ]
        healthy = [im for im in self.catalog.referenceable if im.fault is None]
        self.catalog.popularity = [healthy[i] for i in self.rng.permutation(len(healthy))]
        return self.catalog

    def plan_bad_picture(self, kind: str) -> WebImage:
        index = self.scene_count
        rng = np.random.default_rng([self.seed, 23, index])
        if kind == "tiny":
            scene = self.new_scene()
            long_side = int(rng.integers(TINY_LONG_SIDE[0], TINY_LONG_SIDE[1] + 1))
            resize = long_side / max(scene.width, scene.height)
        else:
            self.scene_count += 1
            scene = shapeless_scene(rng, f"s{index:06d}", kind)
            resize = 1.0
        job = RenderJob(scene=scene, outputs=[])
        self.catalog.jobs.append(job)
        return self.add_served_picture(scene, f"b{index:06d}", kind, job, resize=resize)

    def plan_scene_family(self, previous: Scene | None = None) -> WebImage:
        """A scene's original URL, plus near-duplicate and srcset variants for some scenes."""
        scene = self.new_scene(previous)
        base_id = f"i{self.scene_count - 1:06d}"
        job = RenderJob(scene=scene, outputs=[])
        self.catalog.jobs.append(job)
        fmt = "png" if self.rng.random() < PNG_SHARE else "jpeg"
        original = self.add_served_picture(scene, base_id, "original", job, fmt=fmt)
        if self.rng.random() < NEAR_DUP_SHARE:
            for v in range(int(self.rng.integers(1, 3))):
                variant = NEAR_DUP_VARIANTS[int(self.rng.integers(len(NEAR_DUP_VARIANTS)))]
                settings = {
                    "copy": {"fmt": fmt},
                    "reencode": {"quality": int(self.rng.integers(55, 80))},
                    "resize": {"resize": float(self.rng.uniform(0.7, 0.95))},
                    "crop": {"crop_fraction": float(self.rng.uniform(0.02, 0.06))},
                }[variant]
                self.add_served_picture(scene, f"{base_id}-{variant}{v}", variant, job, **settings)
        if scene.width >= 400 and self.rng.random() < SRCSET_SHARE:
            candidates = []
            for factor in SRCSET_FACTORS:
                small = self.add_served_picture(
                    scene,
                    f"{base_id}-{round(factor * 100)}w",
                    "srcset_small",
                    job,
                    host=original.host,
                    fmt=fmt,
                    resize=factor,
                )
                candidates.append((small, small.width))
            self.catalog.srcset[original.url] = candidates
        return original

    def plan_fault(self, kind: str, originals: list[WebImage]) -> None:
        if kind in PICTURE_BEARING_FAULTS and kind != "redirect_chain":
            scene = self.new_scene()
            job = RenderJob(scene=scene, outputs=[])
            self.catalog.jobs.append(job)
            extra: Route = {
                "retry_503": {
                    "fail_first": {"count": 2, "status": 503, "retry_after": faults.RETRY_AFTER_S}
                },
                "retry_429": {
                    "fail_first": {"count": 1, "status": 429, "retry_after": faults.RETRY_AFTER_S}
                },
                "slow": {"delay_s": faults.SLOW_DELAY_S},
                "x_robots_noai": {"headers": {"X-Robots-Tag": "noai"}},
                "x_robots_noimageai": {"headers": {"X-Robots-Tag": "noimageai"}},
                "robots_disallowed": {},
                "robots_disallowed_agent": {},
            }[kind]
            prefix = {
                "robots_disallowed": faults.DISALLOWED_FOR_ALL.rstrip("/"),
                "robots_disallowed_agent": faults.DISALLOWED_FOR_AGENT.rstrip("/"),
            }.get(kind, "")
            host = self.random_host(with_robots=bool(prefix))
            self.add_served_picture(
                scene,
                f"f{self.scene_count - 1:06d}",
                "fault",
                job,
                host=host,
                prefix=prefix,
                route_extra=extra,
                fault=kind,
            )
            return
        if kind == "redirect_chain":
            final = originals[int(self.rng.integers(len(originals)))]
            hops = [self.random_host() for _ in range(int(self.rng.integers(2, 4)))]
            location = final.url
            for host in reversed(hops[1:]):
                path = self.new_path(host, final.scene, "jpg", prefix="/go")
                self.catalog.routes[host][path] = {
                    "redirect": {"status": 302, "location": location},
                    "fault": kind,
                }
                location = self.url(host, path)
            start = self.add_unserved(
                final.scene, kind, hops[0], {"redirect": {"status": 301, "location": location}}
            )
            start.image_id, start.final_url = final.image_id, final.url
            start.width, start.height = final.width, final.height
            return
        scene = self.new_scene()
        host = self.random_host()
        if kind == "truncated":
            job = RenderJob(scene=scene, outputs=[])
            self.catalog.jobs.append(job)
            image = self.add_served_picture(
                scene, f"t{self.scene_count - 1:06d}", "fault", job, host=host, fault=kind
            )
            self.catalog.routes[host][image.path]["truncate_fraction"] = 0.5
        elif kind == "forbidden_address":
            self.add_unserved(scene, kind, FORBIDDEN_ADDRESSES[0], route=None)
        elif kind == "redirect_to_forbidden":
            target = self.url(
                FORBIDDEN_ADDRESSES[0], self.new_path(FORBIDDEN_ADDRESSES[0], scene, "jpg")
            )
            self.add_unserved(scene, kind, host, {"redirect": {"status": 302, "location": target}})
        elif kind == "redirect_loop":
            other = self.random_host()
            first = self.add_unserved(scene, kind, host, None)
            back_path = self.new_path(other, scene, "jpg", prefix="/go")
            self.catalog.routes[other][back_path] = {
                "redirect": {"status": 302, "location": first.url},
                "fault": kind,
            }
            self.catalog.routes[host][first.path] = {
                "redirect": {"status": 302, "location": self.url(other, back_path)},
                "fault": kind,
            }
        else:
            self.add_unserved(scene, kind, host, self.dead_route(kind))

    def dead_route(self, kind: str) -> Route:
        if kind == "not_found":
            return {"status": 404}
        if kind == "server_error":
            return {"status": 500}
        if kind == "not_image":
            self.catalog.static_files["static/login.html"] = faults.NOT_IMAGE_BODY
            return {"file": "static/login.html", "content_type": "text/html; charset=utf-8"}
        if kind == "decompression_bomb":
            if "static/bomb.png" not in self.catalog.static_files:
                self.catalog.static_files["static/bomb.png"] = faults.decompression_bomb_png()
            return {"file": "static/bomb.png", "content_type": "image/png"}
        if kind == "corrupt_image":
            name = f"static/corrupt-{self.serial}.jpg"
            self.catalog.static_files[name] = faults.corrupt_jpeg_bytes(
                hashlib.sha256(f"{self.seed}:{name}".encode()).digest()
            )
            return {"file": name, "content_type": "image/jpeg"}
        raise ValueError(f"no dead route for fault kind {kind!r}")


def plan_catalog(
    seed: int,
    scale: Scale,
    port: int,
    concepts: ConceptSampler,
    contaminant_scenes: list[tuple[str, Scene]],
) -> Catalog:
    """Plan every image URL of the web; `contaminant_scenes` are (eval key, scene) to plant."""
    return _CatalogPlanner(seed, scale, port, concepts).plan(contaminant_scenes)
