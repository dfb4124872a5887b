import io

import numpy as np
import pytest
from PIL import Image
from planted_pool import draw_picture, jpeg, near_copy

from curation.score.images import decode_rgb, pixel_signature
from curation.score.neighbours import (
    equal_value_pairs,
    nearest,
    similar_pairs,
    union_find_roots,
)


def clustered_vectors(
    clusters: int = 20, members: int = 3, dim: int = 32, noise: float = 0.01, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim))
    labels = np.repeat(np.arange(clusters), members)
    vectors = centres[labels] + noise * rng.normal(size=(len(labels), dim))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors.astype(np.float32), labels


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw"])
def test_similar_pairs_link_exactly_the_members_of_each_cluster(kind):
    vectors, labels = clustered_vectors()
    pairs = similar_pairs(vectors, threshold=0.95, kind=kind, k=8)
    assert len(pairs) == 20 * 3  # each 3-member cluster has 3 pairs, nothing across clusters
    assert np.all(labels[pairs[:, 0]] == labels[pairs[:, 1]])
    assert np.all(pairs[:, 0] < pairs[:, 1])


def test_union_find_joins_chains_into_one_component():
    roots = union_find_roots(6, np.array([[0, 1], [4, 1], [2, 5]]))
    assert roots.tolist() == [0, 0, 2, 3, 0, 2]


def test_equal_value_pairs_chain_identical_values_and_skip_nulls():
    pairs = equal_value_pairs(["a", None, "b", "a", None, "a"])
    assert pairs.tolist() == [[0, 3], [0, 5]]


def test_nearest_reference_by_cosine():
    vectors, _labels = clustered_vectors(clusters=5, members=2)
    sims, ids = nearest(vectors[1::2], vectors[0::2])
    assert ids.tolist() == [0, 1, 2, 3, 4]
    assert np.all(sims > 0.99)


def test_pixel_signature_matches_a_reupload_but_not_a_different_picture():
    rng = np.random.default_rng(3)
    picture, _ = draw_picture(rng, 300, 220)
    other, _ = draw_picture(rng, 300, 220)
    original = pixel_signature(decode_rgb(jpeg(picture)))
    reupload = pixel_signature(decode_rgb(jpeg(near_copy(picture, rng), quality=70)))
    different = pixel_signature(decode_rgb(jpeg(other)))
    assert original.shape == (432,) and np.linalg.norm(original) == pytest.approx(1, abs=1e-5)
    assert original @ reupload > 0.99
    assert original @ different < 0.9


def test_a_flat_grey_image_has_no_signature():
    assert not pixel_signature(Image.new("RGB", (50, 40), (90, 90, 90))).any()


def test_draft_decoding_keeps_at_least_the_requested_side():
    rng = np.random.default_rng(4)
    picture, _ = draw_picture(rng, 800, 600)
    image = decode_rgb(jpeg(picture), min_side=64)
    assert min(image.size) >= 64 and image.size[0] < 800
    with pytest.raises(ValueError, match="Error|cannot|truncated|identify"):
        decode_rgb(io.BytesIO(jpeg(picture)).getvalue()[:100])
    assert Image.open(io.BytesIO(jpeg(picture))).size == (800, 600)
