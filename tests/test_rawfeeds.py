"""Fetching raw images from NASA's raw-image feeds, against a fake mars.nasa.gov on 127.0.0.1.

The fake serves feed pages in the shapes the real feeds have used (Mars 2020: three wrappers;
MSL: ``items``/``more`` paging) and small JPEGs, and can fail on demand: 500, a slow answer, 404,
a body cut short. Nothing here reaches the internet.
"""

from __future__ import annotations

import io
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pandas as pd
import pytest

from conftest import local_http_server
from PIL import Image

from marsrover import acquisition, cli, config, rawfeeds
from marsrover.rawfeeds import FeedError

M2020_PATH = "/rss/api/"
MSL_PATH = "/api/v1/raw_image_items/"


def jpeg(name: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 12), (len(name) * 7 % 255, 80, 160)).save(buffer, "JPEG")
    return buffer.getvalue()


@dataclass
class Seen:
    path: str
    query: dict[str, str]
    headers: dict[str, str]


@dataclass
class FakeNasa:
    url: str = ""
    m2020_pages: list = field(default_factory=list)  # page n -> JSON payload; beyond: empty
    m2020_empty: object = field(default_factory=lambda: {"images": [], "total_results": 0})
    msl_pages: list = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)
    # one-shot behaviours by request path, in order: "500", "slow", "404", "truncate"
    failures: dict[str, list[str]] = field(default_factory=dict)
    always_404: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def fail(self, path: str, *behaviours: str) -> None:
        self.failures.setdefault(path, []).extend(behaviours)

    def requests_to(self, path_start: str) -> list[Seen]:
        return [s for s in self.seen if s.path.startswith(path_start)]

    @property
    def image_requests(self) -> list[Seen]:
        return self.requests_to("/img/")

    def m2020_item(self, image_id: str, sol: int, *, sample_type: str = "Full", camera="NAVCAM_LEFT") -> dict:
        files = {size: f"{self.url}/img/{image_id}_{size}.jpg" for size in ("small", "medium", "large")}
        files["full_res"] = f"{self.url}/img/{image_id}.png"
        return {"imageid": image_id, "sol": sol, "camera": {"instrument": camera, "filter_name": "UNK"},
                "image_files": files, "date_taken_utc": f"2021-03-{sol % 28 + 1:02d}T10:00:00.000",
                "sample_type": sample_type, "title": "Mars Perseverance Sol"}

    def msl_item(self, image_id: str, sol: int, *, thumbnail: bool = False) -> dict:
        return {"id": hash(image_id) % 10**6, "imageid": image_id, "sol": sol, "instrument": "NAV_LEFT_B",
                "https_url": f"{self.url}/img/{image_id}.JPG", "is_thumbnail": thumbnail,
                "date_taken": f"2022-05-{sol % 28 + 1:02d}T12:00:00.000Z", "camera_vector": "(0,0,1)"}


class _Handler(BaseHTTPRequestHandler):
    fake: FakeNasa

    def log_message(self, *args):
        pass

    def do_GET(self):
        fake = self.fake
        parts = urlsplit(self.path)
        query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
        with fake.lock:
            fake.seen.append(Seen(parts.path, query, dict(self.headers)))
            queue = fake.failures.get(parts.path) or []
            behaviour = queue.pop(0) if queue else None
        try:
            if parts.path in fake.always_404 or behaviour == "404":
                return self._send(404, b"not found", "text/plain")
            if behaviour == "500":
                return self._send(500, b"oops", "text/plain")
            if behaviour == "slow":
                time.sleep(0.6)  # longer than the client's timeout in these tests
            if parts.path == M2020_PATH:
                pages, empty = fake.m2020_pages, fake.m2020_empty
            elif parts.path == MSL_PATH:
                pages = fake.msl_pages
                empty = {"items": [], "more": False, "total": 0, "page": query.get("page"), "per_page": 0}
            elif parts.path.startswith("/img/"):
                return self._send(200, jpeg(parts.path), "image/jpeg", truncate=behaviour == "truncate")
            else:
                return self._send(404, b"", "text/plain")
            page = int(query.get("page", 0))
            payload = pages[page] if page < len(pages) else empty
            self._send(200, json.dumps(payload).encode(), "application/json")
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout test)
            pass

    def _send(self, status: int, body: bytes, content_type: str, truncate: bool = False):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))  # always the full length...
        self.end_headers()
        self.wfile.write(body[: len(body) // 2] if truncate else body)  # ...maybe not the full body


@pytest.fixture
def nasa():
    with local_http_server(_Handler, FakeNasa()) as fake:
        yield fake


def fetch(nasa: FakeNasa, mission: str, out: Path, **kwargs) -> rawfeeds.FetchResult:
    path = M2020_PATH if mission == "mars2020" else MSL_PATH
    options = dict(base_url=nasa.url + path, backoff=0, timeout=5, progress=False, per_page=2)
    return rawfeeds.fetch_raw(mission, out_dir=out, **{**options, **kwargs})


def m2020_pages(nasa: FakeNasa, shape: str) -> list:
    """Five items (one a thumbnail) on three pages of two, in one of the feed's wrappers."""
    items = [[nasa.m2020_item("ZL0_0100_A", 100), nasa.m2020_item("ZL0_0100_T", 100, sample_type="Thumbnail")],
             [nasa.m2020_item("NLF_0099_B", 99, camera="NAVCAM_RIGHT"), nasa.m2020_item("FLF_0098_C", 98)],
             [nasa.m2020_item("RRF_0097_D", 97)]]
    if shape == "images":
        return [{"images": page, "total_results": 5, "per_page": 2, "page": n} for n, page in enumerate(items)]
    if shape == "items":
        return [{"items": page, "total": 5} for page in items]
    return items  # a bare list; the feed then says nothing about the total: an empty page ends it


M2020_IDS = ["ZL0_0100_A", "NLF_0099_B", "FLF_0098_C", "RRF_0097_D"]


# --------------------------------------------------------------------------------------------
# Mars 2020


@pytest.mark.parametrize("shape", ["images", "items", "bare list"])
def test_mars2020_pages_in_every_wrapper_shape_are_read(nasa, tmp_path, shape):
    nasa.m2020_pages = m2020_pages(nasa, shape)
    nasa.m2020_empty = [] if shape == "bare list" else nasa.m2020_empty
    result = fetch(nasa, "mars2020", tmp_path / "m2020")
    assert result.downloaded == 4 and result.listed == 4 and not result.failed
    metadata = pd.read_csv(tmp_path / "m2020" / "metadata.csv", dtype=str)
    assert list(metadata.columns) == ["image_id", "sol", "instrument", "date_taken", "url", "local_path"]
    assert metadata["image_id"].tolist() == M2020_IDS  # the thumbnail is left out
    first = metadata.iloc[0]
    assert (first["sol"], first["instrument"]) == ("100", "NAVCAM_LEFT")
    assert first["date_taken"].startswith("2021-03-") and first["url"].endswith("/img/ZL0_0100_A_medium.jpg")
    for row in metadata.itertuples():
        assert (tmp_path / "m2020" / row.local_path).read_bytes() == jpeg(f"/img/{row.image_id}_medium.jpg")
    feed = nasa.requests_to(M2020_PATH)
    expected_pages = 4 if shape == "bare list" else 3  # with a total, no request for the empty page
    assert [s.query["page"] for s in feed] == [str(n) for n in range(expected_pages)]
    assert all(s.query["feed"] == "raw_images" and s.query["category"] == "mars2020"
               and s.query["feedtype"] == "json" and s.query["num"] == "2" for s in feed)


def test_mars2020_size_picks_the_rendition(nasa, tmp_path):
    nasa.m2020_pages = m2020_pages(nasa, "images")
    fetch(nasa, "mars2020", tmp_path / "small", size="small", limit=1)
    assert [s.path for s in nasa.image_requests] == ["/img/ZL0_0100_A_small.jpg"]
    assert (tmp_path / "small" / "ZL0_0100_A.jpg").is_file()
    with pytest.raises(ValueError, match="size"):
        fetch(nasa, "mars2020", tmp_path / "x", size="full_res")


def test_sol_range_becomes_feed_conditions(nasa, tmp_path):
    fetch(nasa, "mars2020", tmp_path / "a", sols="90-120")
    fetch(nasa, "msl", tmp_path / "b", sols="3000-3000")
    fetch(nasa, "msl", tmp_path / "c", sols="42")
    m2020, *msl = nasa.requests_to(M2020_PATH) + nasa.requests_to(MSL_PATH)
    assert (m2020.query["condition_2"], m2020.query["condition_3"]) == ("90:sol:gte", "120:sol:lte")
    assert (msl[0].query["condition_2"], msl[0].query["condition_3"]) == ("3000:sol:gte", "3000:sol:lte")
    assert (msl[1].query["condition_2"], msl[1].query["condition_3"]) == ("42:sol:gte", "42:sol:lte")
    assert all(s.query["condition_1"] == "msl:mission" for s in msl)


@pytest.mark.parametrize("text, expected", [
    ("100-200", (100, 200)), ("7", (7, 7)), (" 5 - 9 ", (5, 9)), ("100-", (100, None)), ("-20", (None, 20)),
    (None, (None, None)), ("", (None, None)),
])
def test_parse_sols(text, expected):
    assert rawfeeds.parse_sols(text) == expected


@pytest.mark.parametrize("text", ["9-3", "a-b", "1-2-3", "-", "1.5"])
def test_parse_sols_refuses_nonsense(text):
    with pytest.raises(ValueError, match="sol"):
        rawfeeds.parse_sols(text)


# --------------------------------------------------------------------------------------------
# MSL


def msl_pages(nasa: FakeNasa) -> list:
    return [
        {"items": [nasa.msl_item("NLB_1", 3001), nasa.msl_item("NLB_1_thumb", 3001, thumbnail=True),
                   nasa.msl_item("NLB_2", 3001)], "more": True, "total": 4, "page": 0, "per_page": 2},
        {"items": [nasa.msl_item("FLB_3", 3000)], "more": False, "total": 4, "page": 1, "per_page": 2},
        {"items": [nasa.msl_item("NEVER", 1)], "more": False, "total": 4, "page": 2, "per_page": 2},
    ]


def test_msl_pages_until_more_is_false_and_skips_thumbnails(nasa, tmp_path):
    nasa.msl_pages = msl_pages(nasa)
    result = fetch(nasa, "msl", tmp_path / "msl")
    assert result.downloaded == 3
    metadata = rawfeeds.read_metadata(tmp_path / "msl")
    assert metadata["image_id"].tolist() == ["NLB_1", "NLB_2", "FLB_3"]
    assert metadata["local_path"].tolist() == ["NLB_1.jpg", "NLB_2.jpg", "FLB_3.jpg"]
    assert metadata["instrument"].unique().tolist() == ["NAV_LEFT_B"]
    feed = nasa.requests_to(MSL_PATH)
    assert [s.query["page"] for s in feed] == ["0", "1"]
    assert all(s.query["order"] == "sol desc" and s.query["per_page"] == "2" for s in feed)
    assert sorted(s.path for s in nasa.image_requests) == ["/img/FLB_3.JPG", "/img/NLB_1.JPG", "/img/NLB_2.JPG"]


# --------------------------------------------------------------------------------------------
# Politeness and failures


def test_every_request_names_the_project_in_its_user_agent(nasa, tmp_path):
    nasa.msl_pages = msl_pages(nasa)
    fetch(nasa, "msl", tmp_path / "msl")
    assert nasa.seen and {s.headers["User-Agent"] for s in nasa.seen} == {acquisition.USER_AGENT}
    assert "marsrover" in acquisition.USER_AGENT


def test_a_500_is_retried_for_pages_and_images(nasa, tmp_path):
    nasa.msl_pages = msl_pages(nasa)
    nasa.fail(MSL_PATH, "500")
    nasa.fail("/img/NLB_2.JPG", "500", "500")
    result = fetch(nasa, "msl", tmp_path / "msl")
    assert result.downloaded == 3 and not result.failed
    assert len(nasa.requests_to(MSL_PATH)) == 3 and len(nasa.requests_to("/img/NLB_2.JPG")) == 3


def test_a_timeout_is_retried(nasa, tmp_path):
    nasa.msl_pages = msl_pages(nasa)
    nasa.fail(MSL_PATH, "slow")
    nasa.fail("/img/NLB_1.JPG", "slow")
    result = fetch(nasa, "msl", tmp_path / "msl", timeout=0.2)
    assert result.downloaded == 3
    assert len(nasa.requests_to("/img/NLB_1.JPG")) == 2 and len(nasa.requests_to(MSL_PATH)) == 3


def test_retries_run_out_with_a_clear_error_and_the_metadata_so_far_is_kept(nasa, tmp_path):
    nasa.msl_pages = msl_pages(nasa)
    nasa.fail("/img/NLB_2.JPG", *["500"] * 3)
    with pytest.raises(acquisition.DownloadError, match="giving up on .*/img/NLB_2.JPG after 3 attempts"):
        fetch(nasa, "msl", tmp_path / "msl", retries=2)
    assert rawfeeds.read_metadata(tmp_path / "msl")["image_id"].tolist() == ["NLB_1"]


def test_a_truncated_image_body_is_retried_and_never_left_as_a_file(nasa, tmp_path):
    nasa.msl_pages = msl_pages(nasa)
    nasa.fail("/img/NLB_1.JPG", "truncate")
    fetch(nasa, "msl", tmp_path / "msl")
    assert (tmp_path / "msl" / "NLB_1.jpg").read_bytes() == jpeg("/img/NLB_1.JPG")
    assert len(nasa.requests_to("/img/NLB_1.JPG")) == 2
    assert sorted(p.name for p in (tmp_path / "msl").iterdir()) == [
        "FLB_3.jpg", "NLB_1.jpg", "NLB_2.jpg", "metadata.csv"]  # no .part or temporary files


def test_a_404_feed_page_is_a_clear_error(nasa, tmp_path):
    nasa.always_404.add(MSL_PATH)
    with pytest.raises(FeedError, match=r"HTTP 404 .*127\.0\.0\.1.*/api/v1/raw_image_items/") as error:
        fetch(nasa, "msl", tmp_path / "msl")
    assert error.value.status == 404
    assert len(nasa.requests_to(MSL_PATH)) == 1  # a client error is not retried


def test_a_404_image_is_reported_and_the_others_are_fetched(nasa, tmp_path):
    nasa.msl_pages = msl_pages(nasa)
    nasa.always_404.add("/img/NLB_2.JPG")
    result = fetch(nasa, "msl", tmp_path / "msl")
    assert result.downloaded == 2
    assert [image_id for image_id, _ in result.failed] == ["NLB_2"]
    assert "HTTP 404" in result.failed[0][1] and "/img/NLB_2.JPG" in result.failed[0][1]
    assert rawfeeds.read_metadata(tmp_path / "msl")["image_id"].tolist() == ["NLB_1", "FLB_3"]


# --------------------------------------------------------------------------------------------
# Resuming and limits


def test_a_second_run_downloads_nothing_and_duplicates_no_metadata(nasa, tmp_path):
    nasa.m2020_pages = m2020_pages(nasa, "images")
    fetch(nasa, "mars2020", tmp_path / "m")
    first = (tmp_path / "m" / "metadata.csv").read_text()
    images_before = len(nasa.image_requests)
    result = fetch(nasa, "mars2020", tmp_path / "m")
    assert result.downloaded == 0 and result.skipped == 4
    assert len(nasa.image_requests) == images_before
    assert (tmp_path / "m" / "metadata.csv").read_text() == first


def test_limit_stops_early_and_a_larger_limit_later_fetches_only_the_rest(nasa, tmp_path):
    nasa.m2020_pages = m2020_pages(nasa, "images")
    result = fetch(nasa, "mars2020", tmp_path / "m", limit=2)
    assert result.downloaded == 2 and len(nasa.requests_to(M2020_PATH)) == 2  # page 2 never asked for
    assert rawfeeds.read_metadata(tmp_path / "m")["image_id"].tolist() == M2020_IDS[:2]
    (tmp_path / "m" / "NLF_0099_B.jpg").unlink()  # lost since: fetched again
    result = fetch(nasa, "mars2020", tmp_path / "m", limit=3)
    assert (result.downloaded, result.skipped) == (2, 1)
    assert rawfeeds.read_metadata(tmp_path / "m")["image_id"].tolist() == M2020_IDS[:3]


def test_a_file_downloaded_before_a_crash_is_recorded_not_fetched_again(nasa, tmp_path):
    nasa.msl_pages = msl_pages(nasa)
    (tmp_path / "msl").mkdir()
    (tmp_path / "msl" / "NLB_2.jpg").write_bytes(jpeg("/img/NLB_2.JPG"))
    result = fetch(nasa, "msl", tmp_path / "msl")
    assert (result.downloaded, result.skipped) == (2, 1)
    assert "/img/NLB_2.JPG" not in [s.path for s in nasa.image_requests]
    assert rawfeeds.read_metadata(tmp_path / "msl")["image_id"].tolist() == ["NLB_1", "NLB_2", "FLB_3"]


def test_default_folder_is_data_raw_mission(nasa, tmp_path, monkeypatch):
    monkeypatch.setenv("MARSROVER_DATA_DIR", str(tmp_path / "data"))
    nasa.msl_pages = msl_pages(nasa)
    result = fetch(nasa, "msl", None, limit=1)
    assert result.out_dir == config.data_paths().raw / "msl" == (tmp_path / "data" / "raw" / "msl").resolve()
    assert (result.out_dir / "NLB_1.jpg").is_file()


def test_the_real_feeds_are_the_defaults():
    assert rawfeeds.MARS2020_FEED_URL == "https://mars.nasa.gov/rss/api/"
    assert rawfeeds.MSL_FEED_URL == "https://mars.nasa.gov/api/v1/raw_image_items/"
    assert "api.nasa.gov" not in rawfeeds.MARS2020_FEED_URL + rawfeeds.MSL_FEED_URL


# --------------------------------------------------------------------------------------------
# The command


def test_fetch_raw_command(nasa, tmp_path, capsys):
    nasa.msl_pages = msl_pages(nasa)
    nasa.always_404.add("/img/FLB_3.JPG")
    out = tmp_path / "msl"
    argv = ["fetch-raw", "--mission", "msl", "--sols", "3000-3001", "--out", str(out), "--per-page", "2",
            "--feed-url", nasa.url + MSL_PATH, "--no-progress"]
    assert cli.main(argv) == 2  # one image failed
    text = capsys.readouterr().out
    assert "3 images listed: 2 downloaded, 0 already here, 1 failed" in text and "FLB_3" in text
    nasa.always_404.clear()
    assert cli.main(argv) == 0
    assert "1 downloaded, 2 already here, 0 failed" in capsys.readouterr().out
    nasa.always_404.add(MSL_PATH)
    assert cli.main(argv) == 1
    assert "HTTP 404" in capsys.readouterr().err


def test_new_images_keep_their_fetch_raw_metadata_wherever_the_notebook_runs(tmp_path, monkeypatch):
    import pandas as pd

    from marsrover import inference, study

    folder = tmp_path / "raw" / "msl"
    folder.mkdir(parents=True)
    for name in ("a.jpg", "b.jpg"):
        (folder / name).write_bytes(b"jpeg")
    # what fetch-raw writes: names relative to the folder
    pd.DataFrame([{"image_id": "a", "sol": "12", "instrument": "MAHLI", "date_taken": "", "url": "u/a",
                   "local_path": "a.jpg"},
                  {"image_id": "b", "sol": "13", "instrument": "Mastcam left", "date_taken": "", "url": "u/b",
                   "local_path": str(folder / "b.jpg")}]  # absolute, as older samples wrote
                 ).to_csv(folder / rawfeeds.METADATA_NAME, index=False)
    monkeypatch.setattr(inference, "load_model", lambda path: None)
    monkeypatch.setattr(inference, "classify_files", lambda model, files, **kwargs: pd.DataFrame(
        {"path": [str(f) for f in files], "label": "Rover", "p_surface": 0.1, "model": "m.keras", "error": ""}))
    monkeypatch.chdir(tmp_path)  # papermill runs notebook 07 from notebooks/, not from the folder

    table = study.classify_new_images(tmp_path / "m.keras", Path("raw/msl")).set_index("image_id")  # relative too
    assert table.loc["a", "instrument"] == "MAHLI" and table.loc["b", "instrument"] == "Mastcam left"
    assert str(table.loc["b", "sol"]) == "13"


def test_a_new_sample_of_test_images_replaces_an_earlier_one(tmp_path):
    from marsrover import config, study

    paths = config.DataPaths(tmp_path / "data")
    rows = []
    for number in range(6):
        name = f"calibrated/img{number}.JPG"
        (paths.images_root / name).parent.mkdir(parents=True, exist_ok=True)
        (paths.images_root / name).write_bytes(b"jpeg %d" % number)
        rows.append({"id": f"img{number}", "path": name, "split": "test", "sol": 100 + number, "instrument": "MAHLI"})
    index = pd.DataFrame(rows)
    folder = paths.processed / "new_images_sample"

    first = study.sample_new_images(paths, index, folder, count=5, seed=1)
    second = study.sample_new_images(paths, index, folder, count=2, seed=2)  # fewer, and other images

    on_disk = sorted(path.name for path in folder.iterdir())
    assert on_disk == sorted([*second["local_path"], rawfeeds.METADATA_NAME])  # nothing left from the first
    assert len(first) == 5 and len(second) == 2


def test_notebook_07_uses_the_given_model_else_the_reports_headline_else_the_default(tmp_path, monkeypatch):
    from marsrover import inference, study

    report = tmp_path / "reports" / "full"
    report.mkdir(parents=True)
    assert study.new_images_model(report, "models/mine.keras") == Path("models/mine.keras")  # no report needed
    monkeypatch.setattr(inference, "find_default_model", lambda: tmp_path / "models" / "exported.keras")
    assert study.new_images_model(report) == tmp_path / "models" / "exported.keras"  # no study ran here yet
    (report / "metrics.json").write_text(json.dumps({"headline": "improved_refit"}))
    exports = tmp_path / "models"
    exports.mkdir()
    (exports / "improved_refit-0123456789ab.keras").write_bytes(b"model")  # all a fresh clone has
    assert study.new_images_model(report, models_dir=exports) == exports / "improved_refit-0123456789ab.keras"
    (report / "models").mkdir()
    (report / "models" / "improved_refit.keras").write_bytes(b"model")  # the study's own, once it has run
    assert study.new_images_model(report, models_dir=exports) == report / "models" / "improved_refit.keras"
