import random

import pytest

from training.locca_targets import collate_locca, decode_box, make_locca_example, usable_refs
from training.tokenizer import TASKS, Tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return Tokenizer()


REFS = [{"phrase": "red square", "box": [0.1, 0.2, 0.5, 0.6]}]


def test_example_builds_caption_aref_and_gcap_targets(tokenizer):
    example = make_locca_example(tokenizer, "A red square on grass", REFS, random.Random(0))
    eos = tokenizer.eos_id
    assert example["caption_prefix"] == [tokenizer.task_token("caption")]
    assert example["caption_target"] == tokenizer.text_ids("a red square on grass") + [eos]
    box = tokenizer.box_tokens((0.1, 0.2, 0.5, 0.6))
    assert example["aref_prefix"] == [tokenizer.task_token("aref")] + tokenizer.text_ids(
        "red square"
    )
    assert example["aref_target"] == box
    assert example["gcap_prefix"] == [tokenizer.task_token("gcap")] + box
    assert example["gcap_target"] == tokenizer.text_ids("red square") + [eos]


def test_missing_caption_or_refs_leave_their_tasks_empty(tokenizer):
    grounding_only = make_locca_example(tokenizer, None, REFS, random.Random(0))
    assert grounding_only["caption_prefix"] == grounding_only["caption_target"] == []
    assert grounding_only["aref_target"]
    caption_only = make_locca_example(tokenizer, "a cat", [], random.Random(0))
    for task in ("aref", "gcap"):
        assert caption_only[f"{task}_prefix"] == caption_only[f"{task}_target"] == []


def test_malformed_refs_are_dropped_and_counted():
    refs = [
        {"phrase": "ok", "box": [0.0, 0.0, 1.2, 0.5]},  # clamped, kept
        {"phrase": "", "box": [0.1, 0.1, 0.2, 0.2]},
        {"phrase": "flat", "box": [0.3, 0.3, 0.3, 0.6]},
        {"phrase": "nan", "box": [float("nan"), 0.1, 0.2, 0.2]},
        {"phrase": "three", "box": [0.1, 0.2, 0.3]},
        "not a dict",
    ]
    kept, dropped = usable_refs(refs)
    assert kept == [("ok", (0.0, 0.0, 1.0, 0.5))] and dropped == 5


def test_long_texts_are_cut_to_fit_max_len_keeping_eos(tokenizer):
    long_text = " ".join(["tree"] * 100)
    example = make_locca_example(
        tokenizer,
        long_text,
        [{"phrase": long_text, "box": [0, 0, 1, 1]}],
        random.Random(0),
        max_len=16,
    )
    for task in TASKS:
        assert len(example[f"{task}_prefix"]) + len(example[f"{task}_target"]) <= 16
    assert example["caption_target"][-1] == tokenizer.eos_id
    assert len(example["aref_target"]) == 4


def test_collate_gives_fixed_shapes_and_disjoint_prefix_and_target_masks(tokenizer):
    rng = random.Random(0)
    examples = [
        make_locca_example(tokenizer, "a red square", REFS, rng),
        make_locca_example(tokenizer, None, REFS, rng),
        make_locca_example(tokenizer, "a blue circle", [], rng),
    ]
    batch = collate_locca(examples, max_len=20)
    for task in TASKS:
        tokens, prefix, target = (
            batch[f"locca_{task}_{key}"] for key in ("tokens", "prefix_mask", "target_mask")
        )
        assert tokens.shape == prefix.shape == target.shape == (3, 20)
        assert not (prefix & target).any()
        for row, example in enumerate(examples):
            assert tokens[row][target[row]].tolist() == example[f"{task}_target"]
            assert tokens[row][prefix[row]].tolist() == example[f"{task}_prefix"]
    assert not batch["locca_caption_target_mask"][1].any()
    assert not batch["locca_aref_target_mask"][2].any()
    with pytest.raises(ValueError, match="exceeds max_len"):
        collate_locca(examples, max_len=4)


def test_decode_box_recovers_the_aref_box(tokenizer):
    example = make_locca_example(tokenizer, None, REFS, random.Random(0))
    decoded = decode_box(tokenizer, example["aref_target"])
    assert decoded == pytest.approx((0.1, 0.2, 0.5, 0.6), abs=1e-3)
