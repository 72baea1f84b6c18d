"""A torch Dataset over ReIDRecords: batches are dicts {"image", "pid", "camid", "index"}."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from dpmpp.data.images import load_image
from dpmpp.data.records import ReIDRecord


class ImageDataset(Dataset):
    def __init__(self, records: list[ReIDRecord], transform, pid_map: dict[int, int] | None = None) -> None:
        self.records, self.transform, self.pid_map = records, transform, pid_map

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict:
        record = self.records[index]
        pid = self.pid_map[record.pid] if self.pid_map is not None else record.pid
        return {
            "image": self.transform(load_image(record.path)),
            "pid": torch.tensor(pid),
            "camid": torch.tensor(record.camid),
            "index": torch.tensor(index),
        }
