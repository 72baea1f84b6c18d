"""Build `pets09_occ`, a small real occluded re-ID benchmark, from PETS09-S2L1 video and MOT ground truth.

Identity = person (tracks grouped by the proposed grouping CSV); camera id = track, so the standard
same-pid-same-camid filter forces a true match to come from another appearance (a re-entry) of the person.
Time is cut into chunks alternating train/test, with a guard gap around every chunk boundary. Queries are test
crops at least `QUERY_MIN_OCCLUSION` hidden; the gallery holds test crops under `HOLISTIC_MAX_OCCLUSION`.
The same persons appear in train and test (a closed-set split over disjoint frames).
"""

from __future__ import annotations

import csv
import io
import logging
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from dpmpp.atomic import atomic_path, write_text
from dpmpp.data.build_occluders import clear_scene_frame, write_bank
from dpmpp.data.foreground import BACKGROUND, box_slice, median_background
from dpmpp.data.pets09_geometry import FRAME_HEIGHT, FRAME_WIDTH, Box, occluding_track, occlusion, read_gt

logger = logging.getLogger(__name__)

CHUNK_FRAMES = 50  # frames per chunk; chunks alternate train, test, train, ...
GUARD_FRAMES = 10  # train and test frames are at least this far apart (about 1.4 s at ~7 fps)
QUERY_MIN_OCCLUSION = 0.15
HOLISTIC_MAX_OCCLUSION = 0.02
TRAIN_FRAME_STEP = 2  # consecutive frames are near duplicates; keep every 2nd for training
GALLERY_FRAME_STEP = 2
JPEG_QUALITY = 92
BACKGROUND_EVERY = 4  # the median background is taken over every 4th frame of the video
MANIFEST_COLUMNS = [
    "path",
    "pid",
    "person",
    "track",
    "camid",
    "frame",
    "bbox_left",
    "bbox_top",
    "bbox_width",
    "bbox_height",
    "occluder",
    "occluded_fraction",
    "split",
    "role",
    "occluder_pid",
]


@dataclass(frozen=True)
class Protocol:
    chunk_frames: int = CHUNK_FRAMES
    guard_frames: int = GUARD_FRAMES
    query_min_occlusion: float = QUERY_MIN_OCCLUSION
    holistic_max_occlusion: float = HOLISTIC_MAX_OCCLUSION
    train_frame_step: int = TRAIN_FRAME_STEP
    gallery_frame_step: int = GALLERY_FRAME_STEP

    def split_of(self, frame: int) -> str | None:
        """'train', 'test', or None inside a guard band (frame is 1-based)."""
        offset = (frame - 1) % self.chunk_frames
        half_guard = self.guard_frames // 2
        if offset < half_guard or offset >= self.chunk_frames - half_guard:
            return None
        return "test" if ((frame - 1) // self.chunk_frames) % 2 == 1 else "train"

    def role_of(self, split: str, frame: int, fraction: float) -> str | None:
        if split == "train":
            return "train" if frame % self.train_frame_step == 0 else None
        if fraction >= self.query_min_occlusion:
            return "query"
        if fraction < self.holistic_max_occlusion and frame % self.gallery_frame_step == 0:
            return "gallery"
        return None


def read_groups(groups_path: str | Path) -> dict[int, str]:
    """track id -> person label (e.g. 'P01')."""
    with open(groups_path, newline="") as handle:
        reader = csv.DictReader(handle)
        missing = {"track_id", "proposed_person"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{groups_path}: expected columns track_id, proposed_person; missing {sorted(missing)}")
        return {int(row["track_id"]): row["proposed_person"] for row in reader}


def plan(boxes: list[Box], groups: dict[int, str], protocol: Protocol) -> list[dict]:
    """Decide every crop's row of the manifest (no pixels needed)."""
    unknown = sorted({b.track for b in boxes} - set(groups))
    if unknown:
        raise ValueError(f"tracks {unknown} have no person in the grouping file")
    persons = sorted(set(groups.values()))
    pid_of = {person: index + 1 for index, person in enumerate(persons)}
    by_frame: dict[int, list[Box]] = defaultdict(list)
    for box in boxes:
        by_frame[box.frame].append(box)
    rows = []
    for box in sorted(boxes, key=lambda b: (b.frame, b.track)):
        split = protocol.split_of(box.frame)
        if split is None:
            continue
        fraction, occluder, _ = occlusion(box, by_frame[box.frame])
        role = protocol.role_of(split, box.frame, fraction)
        if role is None:
            continue
        person = groups[box.track]
        occluding = occluding_track(box, by_frame[box.frame]) if fraction > 0 and occluder == "person" else None
        rows.append(
            {
                "path": f"crops/{role}/{person}_t{box.track:02d}_f{box.frame:04d}.jpg",
                "pid": pid_of[person],
                "person": person,
                "track": box.track,
                "camid": box.track,
                "frame": box.frame,
                "bbox_left": f"{box.left:.2f}",
                "bbox_top": f"{box.top:.2f}",
                "bbox_width": f"{box.width:.2f}",
                "bbox_height": f"{box.height:.2f}",
                "occluder": occluder if fraction > 0 else "none",
                "occluded_fraction": f"{fraction:.4f}",
                "split": split,
                "role": role,
                "occluder_pid": pid_of[groups[occluding]] if occluding is not None else "",
            }
        )
    return _drop_unanswerable_queries(rows)


def _drop_unanswerable_queries(rows: list[dict]) -> list[dict]:
    """A query needs a gallery crop of its person from another track; otherwise it cannot count."""
    gallery_tracks: dict[int, set[int]] = defaultdict(set)
    for row in rows:
        if row["role"] == "gallery":
            gallery_tracks[row["pid"]].add(row["track"])
    return [r for r in rows if r["role"] != "query" or gallery_tracks[r["pid"]] - {r["track"]}]


def crop(frame_rgb: np.ndarray, row: dict) -> Image.Image:
    """The box clipped to the frame, at source resolution (never downscaled)."""
    rows, columns = box_slice(row, (FRAME_WIDTH, FRAME_HEIGHT))
    return Image.fromarray(frame_rgb[rows, columns])


def build(
    video: str | Path, gt: str | Path, groups: str | Path, out: str | Path, protocol: Protocol = Protocol()
) -> list[dict]:
    """Write crops, the occluder bank and `manifest.csv` under `out`; returns the manifest rows."""
    import cv2  # only the builder decodes video

    out = Path(out)
    boxes = read_gt(gt)
    rows = plan(boxes, read_groups(groups), protocol)
    scene_frame, scene_rgb = clear_scene_frame(boxes), None
    wanted: dict[int, list[dict]] = defaultdict(list)
    for row in rows:
        wanted[row["frame"]].append(row)
    capture = cv2.VideoCapture(str(video))
    if not capture.isOpened():
        raise ValueError(f"cannot decode video {video}; expected the PETS09-S2L1 vtest.avi (needs opencv's FFmpeg)")
    frame_number = 0
    last_frame = max(max(wanted, default=0), scene_frame)
    background_frames = []  # every BACKGROUND_EVERY-th frame of the whole video -> median background
    while True:
        ok, frame_bgr = capture.read()
        if not ok:
            if frame_number < last_frame:
                raise ValueError(f"{video} ended at frame {frame_number}; the ground truth needs frame {last_frame}")
            break
        frame_number += 1  # gt frame f is the f-th decoded frame
        if frame_number % BACKGROUND_EVERY == 0:
            background_frames.append(cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2RGB))
        if frame_number == scene_frame:
            scene_rgb = cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2RGB)
        for row in wanted.get(frame_number, []):
            path = out / row["path"]
            path.parent.mkdir(parents=True, exist_ok=True)
            buffer = io.BytesIO()
            crop(cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2RGB), row).save(buffer, format="JPEG", quality=JPEG_QUALITY)
            path.write_bytes(buffer.getvalue())
    capture.release()
    with atomic_path(out / BACKGROUND) as tmp:
        Image.fromarray(median_background(background_frames)).save(tmp, format="PNG", optimize=True)
    write_bank(scene_rgb, scene_frame, rows, out)
    write_text(out / "manifest.csv", manifest_text(rows))
    logger.info("wrote %d crops and %s", len(rows), out / "manifest.csv")
    return rows


def manifest_text(rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=MANIFEST_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()
