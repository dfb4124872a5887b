"""Streaming eval gives today's numbers: each task below is also computed here the way it was
before streaming (every image of a set decoded into memory first; a copy of that logic), on the
mini web's held-out sets, and on the same sets read from S3 in CLIP_benchmark's layout."""

import json

import pytest
import torch

from training.data.samples import IMAGE_EXTENSIONS, decode_image, valid_refs
from training.eval import hit_string
from training.eval.aspect import embed_naflex
from training.eval.datasets import classnames_and_templates, iter_split
from training.eval.embed import batched, embed_image_stream, embed_images, embed_texts
from training.eval.grounding import (
    accuracy_at,
    centred_box,
    iter_referring_expressions,
    predict_boxes,
)
from training.eval.knn import DEFAULT_KS, knn_predict
from training.eval.retrieval import recall_at_k
from training.eval.run import DEFAULT_SETS, evaluate
from training.eval.zeroshot import class_embeddings
from training.models.config import model_config
from training.models.siglip import SigLIP2
from training.tokenizer import Tokenizer

TASKS = ("zeroshot", "retrieval", "grounding", "knn", "aspect")


# ---- the in-memory path as it was, for reference ----
def _all_labelled(dataset, size):
    images, labels = [], []
    for raw in iter_split(dataset):
        data = next(raw.files[e] for e in IMAGE_EXTENSIONS if e in raw.files)
        images.append(data)
        labels.append(int(raw.files["cls"].decode().strip()))
    return images, torch.stack([decode_image(d, size) for d in images]), torch.tensor(labels)


def _chance(labels, classes):
    return torch.bincount(labels, minlength=classes).max().item() / len(labels)


def _in_memory_boxes(model, tokenizer, dataset, batch_size=64):
    images, queries = [], []
    for raw in iter_split(dataset):
        refs = valid_refs(json.loads(raw.files["json"]).get("refs"))
        queries += [(len(images), r["phrase"], tuple(r["box"])) for r in refs]
        data_bytes = next(raw.files[e] for e in IMAGE_EXTENSIONS if e in raw.files)
        images.append(decode_image(data_bytes, model.cfg.vision.image_size))
    images = torch.stack(images)
    max_len = model.cfg.decoder.max_len
    box_ids = range(tokenizer.box_token_offset, tokenizer.task_token_offset)
    predicted = []
    with torch.no_grad():
        for chunk in batched(queries, batch_size):
            _, tokens = model.encode_image(images[torch.tensor([i for i, _, _ in chunk])])
            prefixes = [
                [tokenizer.task_token("aref")] + tokenizer.text_ids(phrase)[: max_len - 5]
                for _, phrase, _ in chunk
            ]
            decoded = model.decoder.greedy_decode(
                tokens, prefixes, steps=4, allowed=box_ids, increasing={2: 0, 3: 1}
            )
            predicted += [tokenizer.decode_box(t) for t in decoded]
    return predicted, [box for _, _, box in queries]


def in_memory_results(model, tokenizer, data):
    size = model.cfg.vision.image_size
    results = {}
    dataset = f"{data}/{DEFAULT_SETS['zeroshot']}"
    names, templates = classnames_and_templates(dataset)
    _, images, labels = _all_labelled(dataset, size)
    embeddings = embed_images(model, images)
    scores = embeddings @ class_embeddings(model, tokenizer, names, templates).T
    results["zeroshot"] = {
        "top1": (scores.argmax(1) == labels).float().mean().item(),
        "chance": _chance(labels, len(names)),
        "classes": len(names),
        "samples": len(labels),
        "top1/hits": hit_string((scores.argmax(1) == labels).numpy()),
    }
    knn = {}
    for k in DEFAULT_KS:
        predicted = knn_predict(embeddings, labels, embeddings, k, len(names), leave_one_out=True)
        knn[f"top1@k{k}"] = (predicted == labels).float().mean().item()
    knn.update(
        chance=_chance(labels, len(names)),
        samples=len(labels),
        memory=len(labels),
        memory_split="test (leave-one-out)",
    )
    results["knn"] = knn

    dataset = f"{data}/{DEFAULT_SETS['retrieval']}"
    images, captions, owner = [], [], []
    for raw in iter_split(dataset):
        lines = [x.strip() for x in raw.files["txt"].decode().splitlines() if x.strip()]
        captions += lines
        owner += [len(images)] * len(lines)
        data_bytes = next(raw.files[e] for e in IMAGE_EXTENSIONS if e in raw.files)
        images.append(decode_image(data_bytes, size))
    similarity = (
        embed_images(model, torch.stack(images)) @ embed_texts(model, tokenizer, captions).T
    )
    results["retrieval"] = recall_at_k(similarity, torch.tensor(owner), captions=captions)

    predicted, truth = _in_memory_boxes(model, tokenizer, f"{data}/{DEFAULT_SETS['grounding']}")
    results["grounding"] = {
        "acc@0.5": accuracy_at(predicted, truth),
        "baseline_whole_image": accuracy_at([(0.0, 0.0, 1.0, 1.0)] * len(truth), truth),
        "baseline_centre_box": accuracy_at([centred_box(truth)] * len(truth), truth),
        "queries": len(truth),
    }

    dataset = f"{data}/{DEFAULT_SETS['aspect']}"
    names, templates = classnames_and_templates(dataset)
    encoded, images, labels = _all_labelled(dataset, size)
    classes = class_embeddings(model, tokenizer, names, templates)
    seq_len = (size // model.cfg.vision.patch_size) ** 2
    square = embed_images(model, images) @ classes.T
    naflex = embed_naflex(model, encoded, seq_len) @ classes.T
    results["aspect"] = {
        "square_top1": (square.argmax(1) == labels).float().mean().item(),
        "naflex_top1": (naflex.argmax(1) == labels).float().mean().item(),
        "chance": _chance(labels, len(names)),
        "seq_len": seq_len,
        "classes": len(names),
        "samples": len(labels),
    }
    return results


# ---- the tests ----
@pytest.fixture(scope="module")
def model_and_tokenizer():
    torch.manual_seed(0)
    tokenizer = Tokenizer(box_bins=64)
    cfg = model_config("tiny", distill=None, **{"text.vocab_size": tokenizer.vocab_size})
    return SigLIP2(cfg).eval(), tokenizer


@pytest.fixture(scope="module")
def reference(model_and_tokenizer, tiny_world):
    model, tokenizer = model_and_tokenizer
    return in_memory_results(model, tokenizer, str(tiny_world[0] / "eval"))


def _streamed(model, tokenizer, data):
    results = evaluate(model, data, TASKS, tokenizer=tokenizer)
    for metrics in results.values():
        assert "error" not in metrics, metrics
        metrics.pop("dataset"), metrics.pop("seconds")
    return results


def test_streaming_eval_equals_the_in_memory_numbers_on_the_mini_web_sets(
    model_and_tokenizer, reference, tiny_world
):
    model, tokenizer = model_and_tokenizer
    assert _streamed(model, tokenizer, str(tiny_world[0] / "eval")) == reference


def test_grounding_streams_images_through_query_batches_that_span_several_images(
    model_and_tokenizer, tiny_world
):
    model, tokenizer = model_and_tokenizer
    dataset = str(tiny_world[0] / "eval" / DEFAULT_SETS["grounding"])
    samples = iter_referring_expressions(dataset, model.cfg.vision.image_size)
    streamed = predict_boxes(model, tokenizer, samples, batch_size=7)
    in_memory = _in_memory_boxes(model, tokenizer, dataset, batch_size=7)
    assert len(in_memory[1]) > 3 * 7
    assert streamed == in_memory


def test_streamed_embeddings_equal_the_in_memory_ones_batch_for_batch(
    model_and_tokenizer, tiny_world
):
    model, _ = model_and_tokenizer
    dataset = str(tiny_world[0] / "eval" / DEFAULT_SETS["zeroshot"])
    _, images, _ = _all_labelled(dataset, model.cfg.vision.image_size)
    assert len(images) > 3 * 5
    streamed = embed_image_stream(model, iter(images), batch_size=5)
    assert torch.equal(streamed, embed_images(model, images, batch_size=5))


def test_eval_reads_clip_benchmark_sets_from_s3(
    model_and_tokenizer, reference, tiny_world, s3_bucket
):
    import s3fs

    fs = s3fs.S3FileSystem()
    local = tiny_world[0] / "eval"
    for task in TASKS:
        name = DEFAULT_SETS[task]
        fs.put(str(local / name), f"{s3_bucket.removeprefix('s3://')}/eval/{name}", recursive=True)
    model, tokenizer = model_and_tokenizer
    assert _streamed(model, tokenizer, f"{s3_bucket}/eval") == reference
