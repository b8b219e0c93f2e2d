"""Shared fixtures: a tiny MSL-shaped data set made on the fly (never the real images)."""

from __future__ import annotations

import contextlib
import os
import threading
from http.server import ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
import requests
from PIL import Image

from marsrover import config, dataset, labels
from marsrover.dataset import CLASS_NAMES_FILE, SPLIT_FILES

# (file name, split, MSL class id): sols and instruments are read from the names.
TINY_SET = [
    ("0010ML0000010000100001E01_DRCL.JPG", "train", 8),  # ground -> Surface
    ("0011MR0000020000100002E01_DRCL.JPG", "train", 9),  # horizon -> Surface
    ("0012MH0000030000100003E01_DRCL.JPG", "train", 24),  # wheel -> Rover
    ("0013ML0000040000100004E01_DRCL.JPG", "train", 12),  # mahli cal target -> Rover
    ("0500MH0000050000200005E01_DRCL.JPG", "val", 5),  # drill holes -> Surface
    ("0501MH0000060000200006E01_DRCL.JPG", "val", 23),  # turret -> Rover
    ("0900MH0000070000300007E01_DRCL.JPG", "test", 8),
    ("0901MR0000080000300008E01_DRCL.JPG", "test", 20),
]
TINY_SIZES = {"train": 4, "val": 2, "test": 2}


def write_tiny_set(root: Path, entries=TINY_SET, image_size=(40, 32)) -> Path:
    """An extracted-archive-shaped folder: calibrated/*.JPG, the split files and class names."""
    rng = np.random.default_rng(0)
    (root / "calibrated").mkdir(parents=True, exist_ok=True)
    for name, _, msl_class in entries:
        pixels = rng.integers(0, 255, size=(image_size[1], image_size[0], 3), dtype=np.uint8)
        pixels[..., 0] = 40 * msl_class % 255  # images differ in content, so their hashes differ
        Image.fromarray(pixels).save(root / "calibrated" / name, "JPEG")
    for split, file_name in SPLIT_FILES.items():
        lines = [f"calibrated/{name} {cls}" for name, s, cls in entries if s == split]
        (root / file_name).write_text("\n".join(lines) + "\n")
    (root / CLASS_NAMES_FILE).write_text(
        "".join(f"{class_id}\t{name}\n" for class_id, name, _, _ in labels.MSL_CLASSES))
    return root


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    """No test reaches the internet: an HTTP request to any host but 127.0.0.1 fails the test."""
    real_send = requests.Session.send

    def send(self, request, **kwargs):
        assert urlsplit(request.url).hostname == "127.0.0.1", f"test tried to reach {request.url}"
        return real_send(self, request, **kwargs)

    monkeypatch.setattr(requests.Session, "send", send)


@pytest.fixture
def tiny_images_root(tmp_path: Path) -> Path:
    return write_tiny_set(tmp_path / "msl-images")


@pytest.fixture
def tiny_paths(tmp_path):
    """The data folders of a tiny set, extracted and indexed as ``marsrover data`` leaves them."""
    paths = config.data_paths(tmp_path / "data")
    write_tiny_set(paths.images_root)
    paths.index_csv.parent.mkdir(parents=True, exist_ok=True)
    dataset.build_index(paths.images_root, progress=False).to_csv(paths.index_csv, index=False)
    return paths


@contextlib.contextmanager
def local_http_server(handler: type, fake):
    """Serve ``handler`` (which reads its state from ``self.fake``) on 127.0.0.1; ``fake.url`` is set."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), type("Handler", (handler,), {"fake": fake}))
    server.daemon_threads = True
    fake.url = f"http://127.0.0.1:{server.server_port}"
    # A short poll interval makes shutdown() quick (the default costs 0.5 s per test).
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
