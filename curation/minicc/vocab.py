"""The closed vocabulary of the procedural world, and its small translation tables.

Everything a caption can say (shape kind, colour, size, position, background) is listed here once,
with its English phrase and its Russian, Japanese, Chinese and Korean words. The non-English words
are chosen so that each language's text encodes in the legacy charsets its pages declare
(cp1251/koi8-r, Shift_JIS, GBK, EUC-KR); `tests/curation/minicc` checks that.
"""

from __future__ import annotations

KINDS: tuple[str, ...] = (
    "circle",
    "square",
    "triangle",
    "star",
    "hexagon",
    "ellipse",
    "cross",
    "heart",
    "diamond",
    "ring",
    "pentagon",
    "arrow",
)

# name -> RGB used when rendering; names are what captions say.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 35),
    "orange": (245, 130, 20),
    "yellow": (250, 215, 30),
    "green": (40, 160, 60),
    "blue": (35, 80, 215),
    "purple": (130, 50, 170),
    "pink": (245, 120, 180),
    "brown": (125, 75, 35),
    "black": (20, 20, 20),
    "white": (250, 250, 250),
    "gray": (128, 128, 128),
    "cyan": (30, 200, 215),
}

# Fraction of the image's short side that a lone shape's bounding square spans (generator 3: a
# shape covers a meaningful share of `tiny`'s 64-px input; at version 2's 0.17-0.40 a shape was
# 5-10 px there and its kind could not be learnt). Shapes that share a scene are drawn at
# SHARED_SCENE_SCALE of this, so two or three still fit side by side. Generator 6: 1.4x version
# 5's 0.36-0.64 (benchmarks/kind_contrastive.py: larger shapes, with square pictures and plain
# backdrops, doubled what contrastive training on kind-naming captions learns in 1,000 steps).
SIZES: dict[str, float] = {"small": 0.5, "medium": 0.7, "large": 0.9}
SHARED_SCENE_SCALE = 0.62

# Position name -> centre of the shape as a fraction of (width, height).
POSITIONS: dict[str, tuple[float, float]] = {
    "top left": (0.2, 0.22),
    "top": (0.5, 0.2),
    "top right": (0.8, 0.22),
    "left": (0.18, 0.5),
    "center": (0.5, 0.5),
    "right": (0.82, 0.5),
    "bottom left": (0.2, 0.78),
    "bottom": (0.5, 0.8),
    "bottom right": (0.8, 0.78),
}

# How an English caption places a shape: "at the top left", "in the center", "on the left".
POSITION_PHRASES: dict[str, str] = {
    "top left": "at the top left",
    "top": "at the top",
    "top right": "at the top right",
    "left": "on the left",
    "center": "in the center",
    "right": "on the right",
    "bottom left": "at the bottom left",
    "bottom": "at the bottom",
    "bottom right": "at the bottom right",
}

# The backdrops a scene draws from (render._background also draws "stripes", for banners).
# Generator 6 dropped stripes and checks from scenes: their patterns are also some kinds' textures
# (shapes.KIND_TEXTURES), and captions no longer name the backdrop.
SCENE_BACKGROUNDS: tuple[str, ...] = ("solid", "gradient", "noise")

LANGUAGES: tuple[str, ...] = ("en", "ru", "ja", "zh", "ko")

# Per language: the kind words (generator 6 captions name the kinds only).
TRANSLATIONS: dict[str, dict[str, str]] = {
    "ru": {
        "circle": "круг",
        "square": "квадрат",
        "triangle": "треугольник",
        "star": "звезда",
        "hexagon": "шестиугольник",
        "ellipse": "эллипс",
        "cross": "крест",
        "heart": "сердце",
        "diamond": "ромб",
        "ring": "кольцо",
        "pentagon": "пятиугольник",
        "arrow": "стрелка",
    },
    "ja": {
        "circle": "円",
        "square": "正方形",
        "triangle": "三角形",
        "star": "星",
        "hexagon": "六角形",
        "ellipse": "楕円",
        "cross": "十字",
        "heart": "ハート",
        "diamond": "ひし形",
        "ring": "輪",
        "pentagon": "五角形",
        "arrow": "矢印",
    },
    "zh": {
        "circle": "圆形",
        "square": "正方形",
        "triangle": "三角形",
        "star": "星形",
        "hexagon": "六边形",
        "ellipse": "椭圆",
        "cross": "十字",
        "heart": "心形",
        "diamond": "菱形",
        "ring": "圆环",
        "pentagon": "五边形",
        "arrow": "箭头",
    },
    "ko": {
        "circle": "원",
        "square": "정사각형",
        "triangle": "삼각형",
        "star": "별",
        "hexagon": "육각형",
        "ellipse": "타원",
        "cross": "십자",
        "heart": "하트",
        "diamond": "마름모",
        "ring": "고리",
        "pentagon": "오각형",
        "arrow": "화살표",
    },
}

# Body text for pages, so that charset detection on undeclared pages has something to chew on.
FILLER_SENTENCES: dict[str, tuple[str, ...]] = {
    "en": (
        "Here are a few pictures from our collection.",
        "We update this gallery every week with new shapes.",
        "Leave a comment below if you like these drawings.",
        "All images on this page were made by our readers.",
    ),
    "ru": (
        "Здесь собраны несколько картинок из нашей коллекции.",
        "Мы обновляем эту галерею каждую неделю.",
        "Оставьте комментарий, если вам понравились рисунки.",
        "Все изображения на этой странице сделали наши читатели.",
    ),
    "ja": (
        "これは私たちのコレクションからの写真です。",
        "このギャラリーは毎週新しい図形で更新されます。",
        "気に入ったら下にコメントを残してください。",
        "このページの画像はすべて読者が作りました。",
    ),
    "zh": (
        "这里是我们收藏的一些图片。",
        "我们每周都会用新的图形更新这个画廊。",
        "如果你喜欢这些图画，请在下面留言。",
        "本页所有图片都是读者制作的。",
    ),
    "ko": (
        "여기에 우리 모음집의 그림 몇 장이 있습니다.",
        "이 갤러리는 매주 새로운 도형으로 업데이트됩니다.",
        "마음에 들면 아래에 댓글을 남겨 주세요.",
        "이 페이지의 모든 이미지는 독자들이 만들었습니다.",
    ),
}

# Alt texts that say nothing about the picture (the noise a CLIP filter should drop).
# Alt texts of the kinds the web is full of (see README: "Alt-text noise"): camera and CMS
# file names, boilerplate, keyword lists, and long text that describes nothing.
FILENAME_ALT_PATTERNS: tuple[str, ...] = (
    "IMG_{n4}.jpg",
    "DSC{n5}",
    "DSC_{n4}.JPG",
    "{n3}.png",
    "Screenshot {n4}",
    "pic{n2}",
    "image-{n3}-{n2}x{n2}",
    "photo_{n5}.jpeg",
)
BOILERPLATE_ALTS: tuple[str, ...] = (
    "image",
    "click here",
    "thumbnail",
    "photo",
    "banner",
    "logo",
    "untitled",
    "picture",
    "img",
    "placeholder",
    "spacer",
    "loading...",
    "read more",
    "alt_img",
    "1920x1080",
)
SEO_WORDS: tuple[str, ...] = (
    "free download",
    "hd wallpaper",
    "best price",
    "buy online",
    "clipart",
    "vector",
    "png transparent",
    "cheap",
    "2024",
    "top 10",
    "icon set",
    "stock image",
)
LONG_EMPTY_SENTENCES: tuple[str, ...] = (
    "All rights reserved.",
    "This image is the property of its owner and may not be reproduced without permission.",
    "Image courtesy of our partners.",
    "Please see our terms of use and privacy policy for more information.",
    "Photo for illustration purposes only; the actual product may differ.",
    "Shared from our gallery, follow us for more updates every week.",
    "Image of image, picture of picture, uploaded by the site administrator.",
)
