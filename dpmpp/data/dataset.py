"""A torch Dataset over ReIDRecords: batches are dicts {"image", "pid", "camid", "index"} (+ "person")."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors

from dpmpp.data.images import load_image
from dpmpp.data.records import ReIDRecord


class ImageDataset(Dataset):
    """`person_masks` (see dpmpp.data.foreground) adds "person": [1, H, W] float in {0, 1}, transformed with the
    image (same flip, padding and crop)."""

    def __init__(
        self, records: list[ReIDRecord], transform, pid_map: dict[int, int] | None = None, person_masks=None
    ) -> None:
        self.records, self.transform, self.pid_map = records, transform, pid_map
        self.person_masks = person_masks

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict:
        record = self.records[index]
        pid = self.pid_map[record.pid] if self.pid_map is not None else record.pid
        image = load_image(record.path)
        item = {"pid": torch.tensor(pid), "camid": torch.tensor(record.camid), "index": torch.tensor(index)}
        if self.person_masks is None:
            return {"image": self.transform(image), **item}
        person = tv_tensors.Mask(torch.from_numpy(self.person_masks(record, np.asarray(image))[None]).to(torch.uint8))
        image, person = self.transform(image, person)
        return {"image": image, "person": person.as_subclass(torch.Tensor).float(), **item}
