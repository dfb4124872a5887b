"""The page side of the mini web: which pages exist, their charsets, and every <img> they hold.

`plan_pages` decides everything an HTML page says (URL forms, srcset, lazy loading, captions and
their kinds, junk sources) and records the truth an extractor should recover from each tag.
`html.render_page` turns a `Page` into bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from curation.minicc import urlforms
from curation.minicc.captions import (
    boilerplate_alt,
    empty_but_long_alt,
    filename_alt,
    good_caption,
    seo_alt,
    unsafe_alt,
)
from curation.minicc.catalog import BLANK_GIF_PATH, Catalog, WebImage
from curation.minicc.scales import HOSTS, Scale
from curation.minicc.vocab import FILLER_SENTENCES
from curation.minicc.world import Scene, contrast_sibling

# language -> (share of pages, [(codec, declared where, share within the language)])
PAGE_LANGUAGES: dict[str, tuple[float, list[tuple[str, str, float]]]] = {
    "en": (0.76, [("utf-8", "meta", 0.75), ("utf-8", "http_header", 0.2), ("utf-8", "none", 0.05)]),
    "ru": (
        0.07,
        [
            ("utf-8", "meta", 0.3),
            ("windows-1251", "http_header", 0.35),
            ("koi8-r", "http_header", 0.25),
            ("windows-1251", "none", 0.1),
        ],
    ),
    "ja": (
        0.06,
        [
            ("utf-8", "meta", 0.35),
            ("shift_jis", "meta", 0.35),
            ("shift_jis", "http_equiv", 0.2),
            ("shift_jis", "none", 0.1),
        ],
    ),
    "zh": (
        0.06,
        [
            ("utf-8", "meta", 0.35),
            ("gbk", "meta", 0.3),
            ("gbk", "http_equiv", 0.25),
            ("gbk", "none", 0.1),
        ],
    ),
    "ko": (
        0.05,
        [
            ("utf-8", "meta", 0.35),
            ("euc-kr", "meta", 0.3),
            ("euc-kr", "http_equiv", 0.25),
            ("euc-kr", "none", 0.1),
        ],
    ),
}
# What an <img> tag's text is (truth.caption_kind); rates and their sources: README, "Alt-text
# noise". `good` and `title_only` describe the picture (truth.caption_correct); the rest do not.
CAPTION_KIND_WEIGHTS: dict[str, float] = {
    "good": 0.46,
    "title_only": 0.08,
    "empty": 0.14,  # alt="" or no alt at all
    "filename": 0.07,
    "boilerplate": 0.06,
    "neighbour": 0.08,  # the caption of another picture on the same page
    "hard_negative": 0.03,  # the same picture with one shape's kind changed
    "seo": 0.04,
    "empty_long": 0.04,
}
CORRECT_CAPTION_KINDS = frozenset({"good", "title_only"})
# A picture with no shape (blank, banner) is never described; its tags draw from these.
SHAPELESS_CAPTION_KINDS: dict[str, float] = {
    "empty": 0.4,
    "boilerplate": 0.3,
    "filename": 0.2,
    "empty_long": 0.1,
}
JUNK_SHARE = 0.05
LAZY_SHARE = 0.08
SRCSET_USE_SHARE = 0.6
BASE_HREF_SHARE = 0.1
MALFORMED_SHARE = 0.08
LOCAL_IMAGE_SHARE = 0.5  # share of a page's images drawn from its own (base) host
POPULARITY_EXPONENT = 0.6
TITLE_NOISE = ("Click to enlarge", "Open in new window", "View full size")

_PAGE_PATHS: tuple[str, ...] = (
    "/blog/post-{n}.html",
    "/gallery/{slug}/index.html",
    "/news/{y}/{m:02d}/story-{n}.html",
    "/shop/item-{n}.html",
    "/forum/thread-{n}.html?page={p}",
    "/p/{n}",
    "/photos/album-{n}/",
    "/wiki/Shapes_{n}",
)
_PAGE_TITLE_WORD = {
    "en": "Gallery",
    "ru": "Галерея",
    "ja": "ギャラリー",
    "zh": "画廊",
    "ko": "갤러리",
}


@dataclass
class ImgTag:
    attrs: list[tuple[str, str | None]]  # HTML attributes in order; None = attribute absent
    target: WebImage | None  # None for junk sources
    image_url: str | None  # the absolute normalised URL an extractor should produce
    url_form: str
    caption_kind: str
    alt: str | None
    title: str | None
    lang: str | None

    @property
    def text(self) -> str:
        """The caption text the tag offers: its alt, else its title."""
        return self.alt or self.title or ""


@dataclass
class Page:
    index: int
    url: str
    host: str
    lang: str
    charset: str
    charset_declared: str  # http_header | meta | http_equiv | none
    base_href: str | None
    malformed: bool
    title: str
    filler: list[str]
    links: list[str] = field(default_factory=list)
    tags: list[ImgTag] = field(default_factory=list)
    page_fault: str | None = None
    warc_path: str = ""

    @property
    def effective_base(self) -> str:
        return self.base_href or self.url


def _choice(rng: np.random.Generator, options, weights=None):
    if weights is not None:
        weights = np.asarray(weights, dtype=float)
        weights = weights / weights.sum()
    return options[int(rng.choice(len(options), p=weights))]


class _PopularityPool:
    """Images drawn with Zipf popularity by rank; O(log n) per draw via the cumulative weights."""

    def __init__(self, images: list[WebImage]) -> None:
        self.images = images
        weights = 1.0 / np.arange(1, len(images) + 1) ** POPULARITY_EXPONENT
        self.cumulative = np.cumsum(weights) / weights.sum()

    def draw(self, rng: np.random.Generator) -> WebImage:
        index = int(np.searchsorted(self.cumulative, rng.random(), side="right"))
        return self.images[min(index, len(self.images) - 1)]


class _PagePlanner:
    def __init__(self, seed: int, scale: Scale, port: int, catalog: Catalog) -> None:
        self.seed, self.scale, self.port, self.catalog = seed, scale, port, catalog
        self.rng = np.random.default_rng([seed, 31])
        self.global_pool = _PopularityPool(catalog.popularity)
        local = {h: [im for im in catalog.popularity if im.host == h] for h in HOSTS}
        self.local_pools = {h: _PopularityPool(images) for h, images in local.items() if images}
        self.all_scenes = [im.scene for im in catalog.images if im.scene.shapes]

    def plan(self, faulty_pages: dict[int, str]) -> list[Page]:
        pages = [self.plan_page(i) for i in range(self.scale.pages)]
        for index, fault in faulty_pages.items():
            pages[index].page_fault = fault
        slots = self.assign_targets(pages)
        for page, targets in zip(pages, slots):
            page.tags = [self.plan_tag(page, target, targets) for target in targets]
            page.links = [
                p.url for p in (pages[int(j)] for j in self.rng.integers(0, len(pages), size=3))
            ]
        return pages

    def plan_page(self, index: int) -> Page:
        rng = self.rng
        host = HOSTS[int(rng.integers(len(HOSTS)))]
        lang = _choice(rng, list(PAGE_LANGUAGES), [v[0] for v in PAGE_LANGUAGES.values()])
        options = PAGE_LANGUAGES[lang][1]
        charset, declared, _ = _choice(rng, options, [o[2] for o in options])
        path = _choice(rng, _PAGE_PATHS).format(
            n=index, slug=f"set-{index}", y=2016 + index % 9, m=1 + index % 12, p=1 + index % 4
        )
        url = f"http://{host}:{self.port}{path}"
        base_href = None
        if rng.random() < BASE_HREF_SHARE:
            base_host = HOSTS[int(rng.integers(len(HOSTS)))]
            folder = "/static/gallery/" if rng.random() < 0.5 else "/static/"
            base_href = f"http://{base_host}:{self.port}{folder}"
        filler_pool = FILLER_SENTENCES[lang]
        filler = [filler_pool[int(i)] for i in rng.integers(0, len(filler_pool), size=3)]
        return Page(
            index=index,
            url=url,
            host=host,
            lang=lang,
            charset=charset,
            charset_declared=declared,
            base_href=base_href,
            malformed=bool(rng.random() < MALFORMED_SHARE),
            title=f"{_PAGE_TITLE_WORD[lang]} {index}",
            filler=filler,
        )

    def assign_targets(self, pages: list[Page]) -> list[list[WebImage | None]]:
        """Every catalog URL once on a healthy page, the rest by Zipf popularity."""
        rng = self.rng
        low, high = self.scale.images_per_page
        counts = rng.integers(low, high + 1, size=len(pages))
        slots: list[list[WebImage | None]] = [[None] * int(c) for c in counts]
        open_slots = [
            (p, s)
            for p, page in enumerate(pages)
            if page.page_fault is None
            for s in range(counts[p])
        ]
        must_place = self.catalog.referenceable
        if len(must_place) > len(open_slots):
            raise ValueError(
                f"scale {self.scale.name}: {len(must_place)} image URLs do not fit "
                f"in {len(open_slots)} <img> slots; raise pages or images_per_page"
            )
        chosen = rng.choice(len(open_slots), size=len(must_place), replace=False)
        placed = set()
        for image, slot_index in zip(must_place, chosen):
            p, s = open_slots[int(slot_index)]
            slots[p][s] = image
            placed.add((p, s))
        for p, page in enumerate(pages):
            base_host = urlforms.host_of(page.effective_base).split(":")[0]
            for s in range(counts[p]):
                if (p, s) in placed or rng.random() < JUNK_SHARE:
                    continue
                local = rng.random() < LOCAL_IMAGE_SHARE and base_host in self.local_pools
                pool = self.local_pools[base_host] if local else self.global_pool
                slots[p][s] = pool.draw(rng)
        return slots

    def plan_tag(
        self, page: Page, target: WebImage | None, neighbours: list[WebImage | None]
    ) -> ImgTag:
        rng = self.rng
        if target is None:
            return self.junk_tag()
        weights = CAPTION_KIND_WEIGHTS if target.scene.shapes else SHAPELESS_CAPTION_KINDS
        caption_kind = _choice(rng, list(weights), list(weights.values()))
        alt, title, lang = self.caption(page, target, caption_kind, neighbours)
        alt = unsafe_alt(alt, target.scene, (page.index, neighbours.index(target)))
        base = page.effective_base
        same_host = urlforms.host_of(base) == urlforms.host_of(target.url)
        forms, weights = (
            (urlforms.SAME_HOST_FORMS, urlforms.SAME_HOST_WEIGHTS)
            if same_host
            else (urlforms.OTHER_HOST_FORMS, urlforms.OTHER_HOST_WEIGHTS)
        )
        form = _choice(rng, forms, weights)
        attrs: list[tuple[str, str | None]] = []
        candidates = self.catalog.srcset.get(target.url)
        if candidates and rng.random() < SRCSET_USE_SHARE:
            smallest = candidates[0][0]
            attrs.append(("src", urlforms.write_reference(form, base, smallest.url)))
            parts = [f"{urlforms.write_reference(form, base, c.url)} {w}w" for c, w in candidates]
            parts.append(f"{urlforms.write_reference(form, base, target.url)} {target.width}w")
            attrs.append(("srcset", ", ".join(parts)))
            url_form = f"srcset+{form}"
        elif rng.random() < LAZY_SHARE:
            placeholder = (
                urlforms.LAZY_PLACEHOLDER_DATA_URI if rng.random() < 0.5 else BLANK_GIF_PATH
            )
            attrs.append(("src", placeholder))
            lazy_attr = _choice(rng, urlforms.LAZY_ATTRIBUTES)
            attrs.append((lazy_attr, urlforms.write_reference(form, base, target.url)))
            attrs.append(("class", "lazyload"))
            url_form = f"lazy+{form}"
        else:
            attrs.append(("src", urlforms.write_reference(form, base, target.url)))
            url_form = form
            if rng.random() < 0.2:
                attrs.append(("loading", "lazy"))
        if alt is not None:
            attrs.append(("alt", alt))
        if title is not None:
            attrs.append(("title", title))
        if target.width and rng.random() < 0.5:
            attrs.extend([("width", str(target.width)), ("height", str(target.height))])
        # Self-check: the reference as written must resolve to the truth URL.
        written = [v for k, v in attrs if k in ("src", *urlforms.LAZY_ATTRIBUTES)][-1]
        resolved = (
            target.url if url_form.startswith("srcset") else urlforms.normalise(base, written)
        )
        if resolved != target.url:
            raise AssertionError(
                f"page {page.url}: {written!r} resolves to {resolved}, expected {target.url}"
            )
        return ImgTag(
            attrs=attrs,
            target=target,
            image_url=target.url,
            url_form=url_form,
            caption_kind=caption_kind,
            alt=alt,
            title=title,
            lang=lang,
        )

    def caption(
        self, page: Page, target: WebImage, kind: str, neighbours: list[WebImage | None]
    ) -> tuple[str | None, str | None, str | None]:
        """(alt, title, caption language) for a tag of caption `kind` showing `target`."""
        rng = self.rng
        lang = page.lang if page.lang != "en" and rng.random() < 0.75 else "en"
        scene = target.scene
        if kind == "good":
            title = TITLE_NOISE[int(rng.integers(len(TITLE_NOISE)))] if rng.random() < 0.1 else None
            return good_caption(scene, lang), title, lang
        if kind == "title_only":
            return None, good_caption(scene, lang), lang
        if kind == "neighbour":
            # Another picture's caption that does not also describe this one: alt texts name
            # the kinds only, so a neighbour showing the same kinds would caption it correctly.
            own = _kinds(scene)
            others = [
                n.scene
                for n in neighbours
                if n is not None and n.scene.shapes and _kinds(n.scene) != own
            ]
            if not others:  # no such picture on the page: the caption of another page's
                others = [s for s in self.all_scenes if s.shapes and _kinds(s) != own]
            return good_caption(others[int(rng.integers(len(others)))], lang), None, lang
        if kind == "hard_negative":
            sibling = contrast_sibling(rng, scene, scene.scene_id)
            return good_caption(sibling, lang), None, lang
        if kind == "filename":
            return filename_alt(rng, target.path), None, None
        if kind == "boilerplate":
            return boilerplate_alt(rng), None, None
        if kind == "seo":
            return seo_alt(rng), None, None
        if kind == "empty_long":
            return empty_but_long_alt(rng), None, "en"
        if kind == "empty":
            return ("" if rng.random() < 0.6 else None), None, None
        raise ValueError(f"unknown caption kind {kind!r}")

    def junk_tag(self) -> ImgTag:
        source = _choice(self.rng, urlforms.JUNK_SOURCES)
        alt = "" if self.rng.random() < 0.5 else "spacer"
        return ImgTag(
            attrs=[("src", source), ("alt", alt)],
            target=None,
            image_url=None,
            url_form="junk",
            caption_kind="empty" if alt == "" else "boilerplate",
            alt=alt,
            title=None,
            lang=None,
        )


def _kinds(scene: Scene) -> list[str]:
    """The kinds a scene shows, sorted: what its good caption says, in any order."""
    return sorted(shape.kind for shape in scene.shapes)


def plan_pages(
    seed: int, scale: Scale, port: int, catalog: Catalog, faulty_pages: dict[int, str]
) -> list[Page]:
    """All pages, in WARC order; `faulty_pages` maps page index -> planted page fault."""
    return _PagePlanner(seed, scale, port, catalog).plan(faulty_pages)
