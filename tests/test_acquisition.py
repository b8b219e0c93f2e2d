"""How the archive is fetched (Zenodo or mirror), verified, and unpacked.

Everything runs against a fake Zenodo on 127.0.0.1 and small zips built in ``tmp_path``; the real
data set and the internet are never touched.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import stat
import threading
import zipfile
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from conftest import local_http_server
from marsrover import acquisition, config
from marsrover.acquisition import (
    AcquisitionError,
    ChecksumError,
    DownloadError,
    RemoteFile,
    UnsafeArchiveError,
)

PAYLOAD = random.Random(1049137).randbytes(300_000)
PAYLOAD_MD5 = hashlib.md5(PAYLOAD).hexdigest()
NEW_RECORD = config.ZENODO_RECORD_ID
LEGACY_RECORD = "424242"
NEW_FILE_PATH = f"/api/records/{NEW_RECORD}/files/{config.ARCHIVE_NAME}/content"
LEGACY_FILE_PATH = f"/api/files/legacy-bucket/{config.ARCHIVE_NAME}"
FILE_PATHS = {NEW_FILE_PATH, LEGACY_FILE_PATH}


# --------------------------------------------------------------------------------------------
# Test scaffolding: no network, a fake Zenodo, zip builders


@pytest.fixture(autouse=True)
def _no_mirror(monkeypatch):
    """The real mirror (CI sets it) must not leak into these tests."""
    monkeypatch.delenv(config.MIRROR_ENV, raising=False)


@dataclass
class Request:
    path: str
    headers: dict[str, str]


@dataclass
class FakeZenodo:
    """State of the fake server; tests set the failure knobs and read the request log."""

    url: str = ""
    requests: list[Request] = field(default_factory=list)
    # One-shot behaviours for the next GETs of the file, in order: "truncate", "500", "ignore-range".
    failures: list[str] = field(default_factory=list)
    file_status: int | None = None  # answer every file GET with this status (e.g. 404)
    honour_range: bool = True
    publishes_md5: bool = True  # False: the new record lists the archive without a checksum
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def file_requests(self) -> list[Request]:
        return [r for r in self.requests if r.path in FILE_PATHS]

    @property
    def ranges(self) -> list[str | None]:
        return [r.headers.get("Range") for r in self.file_requests]

    def new_record(self) -> dict:
        # InvenioRDM shape (zenodo.org since late 2023).
        return {
            "id": NEW_RECORD,
            "files": [
                {
                    "id": "7c1fa4c2",
                    "key": config.ARCHIVE_NAME,
                    "size": len(PAYLOAD),
                    "checksum": f"md5:{PAYLOAD_MD5}" if self.publishes_md5 else None,
                    "links": {"self": self.url + NEW_FILE_PATH},
                },
                {
                    "key": "README.txt",
                    "size": 10,
                    "checksum": "md5:" + "0" * 32,
                    "links": {"self": self.url + "/x"},
                },
            ],
        }

    def legacy_record(self) -> dict:
        # Legacy shape: filename/filesize, bare hex checksum, links.download.
        return {
            "id": int(LEGACY_RECORD),
            "files": [
                {
                    "filename": config.ARCHIVE_NAME,
                    "filesize": len(PAYLOAD),
                    "checksum": PAYLOAD_MD5,
                    "links": {"download": self.url + LEGACY_FILE_PATH, "self": self.url + "/api/files/meta"},
                }
            ],
        }


class _Handler(BaseHTTPRequestHandler):
    fake: FakeZenodo  # set on a per-server subclass

    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_GET(self):
        fake = self.fake
        with fake.lock:
            fake.requests.append(Request(self.path, dict(self.headers)))
        if self.path == f"/api/records/{NEW_RECORD}":
            self._json(fake.new_record())
        elif self.path == f"/api/records/{LEGACY_RECORD}":
            self._json(fake.legacy_record())
        elif self.path in FILE_PATHS:
            self._file()
        else:
            self._status(404)

    def _json(self, obj):
        body = json.dumps(obj).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _status(self, code, extra_headers=()):
        self.send_response(code)
        for name, value in extra_headers:
            self.send_header(name, value)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _file(self):
        fake = self.fake
        with fake.lock:
            behaviour = fake.failures.pop(0) if fake.failures else None
        if fake.file_status is not None:
            return self._status(fake.file_status)
        if behaviour == "500":
            return self._status(500)
        start = 0
        wanted = self.headers.get("Range")
        if wanted and fake.honour_range and behaviour != "ignore-range":
            start = int(re.fullmatch(r"bytes=(\d+)-", wanted).group(1))
            if start >= len(PAYLOAD):
                return self._status(416, [("Content-Range", f"bytes */{len(PAYLOAD)}")])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}")
        else:
            self.send_response(200)
        body = PAYLOAD[start:]
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))  # always the full length...
        self.end_headers()
        if behaviour == "truncate":
            self.wfile.write(body[: len(body) // 2])  # ...but hang up halfway through
            return
        self.wfile.write(body)


@pytest.fixture
def zenodo():
    with local_http_server(_Handler, FakeZenodo()) as fake:
        yield fake


def make_zip(path: Path, members, compression=zipfile.ZIP_DEFLATED) -> Path:
    """Write a zip of (name or ZipInfo, bytes) members, unsafe names included, verbatim."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression=compression) as zf:
        for name, data in members:
            zf.writestr(name, data)
    return path


GOOD_MEMBERS = [
    ("msl-images/", b""),
    ("msl-images/calibrated/0001MH0000000000000000E01_DRCL.JPG", b"\xff\xd8 first image" * 50),
    ("msl-images/calibrated/0002MH0000000000000000E01_DRCL.JPG", b"\xff\xd8 second image" * 50),
    ("msl-images/train-calibrated-shuffled.txt", b"calibrated/0001MH0000000000000000E01_DRCL.JPG 1\n"),
]


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def paths(tmp_path) -> config.DataPaths:
    return config.data_paths(tmp_path / "data")


@pytest.fixture
def mirror(tmp_path) -> Path:
    """A mirror folder: a small zip and a SHA256SUMS that lists it."""
    folder = tmp_path / "mirror"
    archive = make_zip(folder / config.ARCHIVE_NAME, GOOD_MEMBERS)
    (folder / "SHA256SUMS").write_text(f"{sha256_of(archive)}  {config.ARCHIVE_NAME}\n")
    return folder


def hidden_leftovers(folder: Path) -> list[str]:
    """Temporary or set-aside entries (all dot-named) that a finished operation must not leave."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".")) if folder.exists() else []


# --------------------------------------------------------------------------------------------
# Zenodo record metadata


def test_file_info_reads_the_current_zenodo_record_shape(zenodo):
    info = acquisition.zenodo_file_info(api_url=zenodo.url + "/api")
    assert info == RemoteFile(config.ARCHIVE_NAME, zenodo.url + NEW_FILE_PATH, len(PAYLOAD), PAYLOAD_MD5)
    assert zenodo.requests[0].path == f"/api/records/{NEW_RECORD}"
    assert zenodo.requests[0].headers["User-Agent"].startswith("marsrover/")


def test_file_info_reads_the_legacy_zenodo_record_shape_preferring_the_download_link(zenodo):
    info = acquisition.zenodo_file_info(record_id=LEGACY_RECORD, api_url=zenodo.url + "/api/")
    assert info == RemoteFile(config.ARCHIVE_NAME, zenodo.url + LEGACY_FILE_PATH, len(PAYLOAD), PAYLOAD_MD5)


def test_file_info_for_a_file_the_record_lacks_names_the_files_it_has(zenodo):
    with pytest.raises(AcquisitionError, match="no file named 'other.zip'") as err:
        acquisition.zenodo_file_info(filename="other.zip", api_url=zenodo.url + "/api")
    assert "README.txt, msl-images.zip" in str(err.value)


def test_file_info_for_an_unknown_record_names_status_and_url(zenodo):
    with pytest.raises(DownloadError, match="HTTP 404") as err:
        acquisition.zenodo_file_info(record_id="999", api_url=zenodo.url + "/api")
    assert f"{zenodo.url}/api/records/999" in str(err.value)


def test_an_unreachable_zenodo_says_how_to_use_a_local_mirror(tmp_path):
    import socket

    with socket.socket() as probe:  # a port nothing listens on: refused at once, offline as on these machines
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}/api"
    with pytest.raises(DownloadError, match="could not fetch Zenodo record") as err:
        acquisition.zenodo_file_info(api_url=closed, timeout=2)
    assert "MARSROVER_MIRROR" in str(err.value) and "SHA256SUMS" in str(err.value)


# --------------------------------------------------------------------------------------------
# download()


def fetch(zenodo, dest: Path, **kwargs) -> Path:
    kwargs.setdefault("backoff", 0)
    kwargs.setdefault("progress", False)
    return acquisition.download(zenodo.url + NEW_FILE_PATH, dest, **kwargs)


def test_download_writes_the_file_and_checks_size_and_md5(zenodo, tmp_path):
    dest = tmp_path / "raw" / "file.zip"
    assert fetch(zenodo, dest, expected_md5=PAYLOAD_MD5, expected_size=len(PAYLOAD)) == dest
    assert dest.read_bytes() == PAYLOAD
    assert not dest.with_name("file.zip.part").exists()
    assert zenodo.ranges == [None]
    assert re.fullmatch(
        r"marsrover/\S+ \(\+https://github\.com/marsrover-study/marsrover\)",
        zenodo.file_requests[0].headers["User-Agent"],
    )


def test_download_resumes_with_a_range_request_after_a_truncated_body(zenodo, tmp_path):
    zenodo.failures = ["truncate"]
    # Bytes of the chunk being read when the connection drops are lost; small chunks keep most.
    dest = fetch(zenodo, tmp_path / "file.zip", expected_md5=PAYLOAD_MD5, chunk_size=16 * 1024)
    assert dest.read_bytes() == PAYLOAD
    first, second = zenodo.ranges
    assert first is None
    resumed_at = int(re.fullmatch(r"bytes=(\d+)-", second).group(1))
    assert len(PAYLOAD) // 2 - 16 * 1024 < resumed_at <= len(PAYLOAD) // 2


def test_download_continues_an_existing_part_file(zenodo, tmp_path):
    dest = tmp_path / "file.zip"
    dest.with_name("file.zip.part").write_bytes(PAYLOAD[:100_000])
    fetch(zenodo, dest, expected_md5=PAYLOAD_MD5)
    assert dest.read_bytes() == PAYLOAD
    assert zenodo.ranges == ["bytes=100000-"]


def test_download_takes_416_to_mean_the_part_file_is_complete_and_verifies_it(zenodo, tmp_path):
    dest = tmp_path / "file.zip"
    dest.with_name("file.zip.part").write_bytes(PAYLOAD)
    fetch(zenodo, dest, expected_md5=PAYLOAD_MD5, expected_size=len(PAYLOAD))
    assert dest.read_bytes() == PAYLOAD
    assert zenodo.ranges == [f"bytes={len(PAYLOAD)}-"]


def test_download_starts_over_when_the_server_ignores_range(zenodo, tmp_path):
    zenodo.honour_range = False
    dest = tmp_path / "file.zip"
    dest.with_name("file.zip.part").write_bytes(b"stale bytes from somewhere else" * 10)
    fetch(zenodo, dest, expected_md5=PAYLOAD_MD5)
    assert dest.read_bytes() == PAYLOAD  # not appended to the stale prefix
    assert zenodo.ranges == ["bytes=310-"]


def test_download_retries_after_a_server_error(zenodo, tmp_path):
    zenodo.failures = ["500"]
    dest = fetch(zenodo, tmp_path / "file.zip", expected_md5=PAYLOAD_MD5)
    assert dest.read_bytes() == PAYLOAD
    assert len(zenodo.file_requests) == 2


def test_download_backs_off_exponentially_between_retries(zenodo, tmp_path, monkeypatch):
    sleeps = []
    monkeypatch.setattr(acquisition.time, "sleep", sleeps.append)
    zenodo.failures = ["500", "truncate", "500"]
    fetch(zenodo, tmp_path / "file.zip", backoff=0.5, expected_md5=PAYLOAD_MD5)
    assert sleeps == [0.5, 1.0, 2.0]


def test_download_gives_up_after_the_allowed_retries(zenodo, tmp_path):
    zenodo.file_status = 503
    with pytest.raises(DownloadError, match="after 3 attempts") as err:
        fetch(zenodo, tmp_path / "file.zip", retries=2)
    assert "503" in str(err.value) and zenodo.url in str(err.value)
    assert len(zenodo.file_requests) == 3
    assert not (tmp_path / "file.zip").exists()


def test_download_fails_at_once_on_404_naming_status_and_url(zenodo, tmp_path):
    zenodo.file_status = 404
    with pytest.raises(DownloadError, match="404") as err:
        fetch(zenodo, tmp_path / "file.zip")
    assert zenodo.url + NEW_FILE_PATH in str(err.value)
    assert len(zenodo.file_requests) == 1  # no retry storm on a client error
    assert not (tmp_path / "file.zip").exists()


def test_download_with_wrong_md5_raises_and_leaves_nothing_behind(zenodo, tmp_path):
    dest = tmp_path / "file.zip"
    with pytest.raises(ChecksumError) as err:
        fetch(zenodo, dest, expected_md5="0" * 32)
    assert "0" * 32 in str(err.value) and PAYLOAD_MD5 in str(err.value)
    assert not dest.exists()
    assert not dest.with_name("file.zip.part").exists()


def test_download_with_wrong_size_raises_checksum_error(zenodo, tmp_path):
    with pytest.raises(ChecksumError, match=f"expected 12 bytes, got {len(PAYLOAD)}"):
        fetch(zenodo, tmp_path / "file.zip", expected_size=12)
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------------------------
# Checksums


def test_file_digests_agree_with_hashlib(tmp_path):
    path = tmp_path / "blob"
    path.write_bytes(PAYLOAD * 5)  # more than one hashing chunk
    assert acquisition.file_md5(path) == hashlib.md5(PAYLOAD * 5).hexdigest()
    assert acquisition.file_sha256(path) == hashlib.sha256(PAYLOAD * 5).hexdigest()


def test_read_sha256sums_accepts_text_and_binary_lines_and_skips_comments(tmp_path):
    a, b = "a" * 64, "B" * 64
    sums = tmp_path / "SHA256SUMS"
    sums.write_text(f"# made with sha256sum\n\n{a}  msl-images.zip\n{b} *other file.bin\n")
    assert acquisition.read_sha256sums(sums) == {"msl-images.zip": a, "other file.bin": b.lower()}


@pytest.mark.parametrize("line", ["not a checksum", "abc123  msl-images.zip", "a" * 64 + "msl-images.zip"])
def test_read_sha256sums_rejects_malformed_lines_naming_file_and_line(tmp_path, line):
    sums = tmp_path / "SHA256SUMS"
    sums.write_text(f"{'c' * 64}  fine.zip\n{line}\n")
    with pytest.raises(AcquisitionError, match=r"SHA256SUMS, line 2"):
        acquisition.read_sha256sums(sums)


def test_verify_sha256_names_path_expected_and_actual(tmp_path):
    path = tmp_path / "blob"
    path.write_bytes(b"hello")
    acquisition.verify_sha256(path, hashlib.sha256(b"hello").hexdigest().upper())  # case-insensitive
    with pytest.raises(ChecksumError) as err:
        acquisition.verify_sha256(path, "f" * 64)
    message = str(err.value)
    assert str(path) in message and "f" * 64 in message
    assert hashlib.sha256(b"hello").hexdigest() in message


# --------------------------------------------------------------------------------------------
# obtain_archive(): Zenodo


def test_obtain_archive_downloads_from_zenodo_writes_md5_sidecar_and_then_reuses_it(zenodo, paths, capsys):
    archive = acquisition.obtain_archive(paths, mirror=None, api_url=zenodo.url + "/api", progress=False)
    assert archive == paths.archive == paths.root / "raw" / "msl-images.zip"
    assert archive.read_bytes() == PAYLOAD
    assert (paths.raw / "msl-images.zip.md5").read_text() == f"{PAYLOAD_MD5}  msl-images.zip\n"
    assert "from Zenodo record 1049137" in capsys.readouterr().out
    seen = len(zenodo.requests)

    assert acquisition.obtain_archive(paths, mirror=None, api_url=zenodo.url + "/api", progress=False) == archive
    assert len(zenodo.requests) == seen  # verified offline against the sidecar
    assert "MD5 matches Zenodo" in capsys.readouterr().out


def test_an_md5_computed_at_download_is_never_called_zenodos(zenodo, paths, capsys):
    zenodo.publishes_md5 = False
    acquisition.obtain_archive(paths, mirror=None, api_url=zenodo.url + "/api", progress=False)
    assert "no MD5 published, not verified" in capsys.readouterr().out
    sidecar = (paths.raw / "msl-images.zip.md5").read_text()
    assert sidecar.startswith("# computed from the downloaded bytes") and f"{PAYLOAD_MD5}  msl-images.zip" in sidecar

    acquisition.obtain_archive(paths, mirror=None, api_url=zenodo.url + "/api", progress=False)
    out = capsys.readouterr().out
    assert "MD5 matches the one computed at download (Zenodo published none)" in out and "Zenodo's" not in out
    paths.archive.write_bytes(PAYLOAD[:-1] + b"!")  # the recorded MD5 still catches corruption
    with pytest.raises(ChecksumError, match="not the one computed at download"):
        acquisition.obtain_archive(paths, mirror=None, api_url=zenodo.url + "/api", progress=False)


def test_obtain_archive_refuses_a_corrupted_existing_archive_and_keeps_it(zenodo, paths):
    acquisition.obtain_archive(paths, mirror=None, api_url=zenodo.url + "/api", progress=False)
    paths.archive.write_bytes(PAYLOAD[:-1] + b"!")
    with pytest.raises(ChecksumError, match="delete it") as err:
        acquisition.obtain_archive(paths, mirror=None, api_url=zenodo.url + "/api", progress=False)
    assert str(paths.archive) in str(err.value)
    assert paths.archive.exists()  # the user decides; nothing deletes the raw archive


def test_obtain_archive_accepts_an_unverifiable_existing_archive_but_says_so(paths, capsys):
    paths.raw.mkdir(parents=True)
    paths.archive.write_bytes(b"whatever the user put here")
    assert acquisition.obtain_archive(paths, mirror=None, api_url="http://127.0.0.1:9/api") == paths.archive
    assert "not verified" in capsys.readouterr().out


def test_obtain_archive_with_mirror_none_forces_zenodo_even_if_a_mirror_is_configured(
    zenodo, paths, mirror, monkeypatch
):
    monkeypatch.setenv(config.MIRROR_ENV, str(mirror))
    acquisition.obtain_archive(paths, mirror=None, api_url=zenodo.url + "/api", progress=False)
    assert paths.archive.read_bytes() == PAYLOAD
    assert len(zenodo.file_requests) == 1


# --------------------------------------------------------------------------------------------
# obtain_archive(): mirror


def test_obtain_archive_copies_and_verifies_from_a_mirror(paths, mirror, capsys):
    archive = acquisition.obtain_archive(paths, mirror=mirror, api_url="http://127.0.0.1:9/api")
    assert archive.read_bytes() == (mirror / config.ARCHIVE_NAME).read_bytes()
    assert f"from mirror {mirror}" in capsys.readouterr().out
    assert hidden_leftovers(paths.raw) == []
    # Second call: checked against the mirror's SHA256SUMS, not copied again.
    before = archive.stat().st_mtime_ns
    assert acquisition.obtain_archive(paths, mirror=mirror) == archive
    assert archive.stat().st_mtime_ns == before
    assert "matches mirror" in capsys.readouterr().out


def test_an_archive_copied_from_a_mirror_is_still_checked_in_a_later_run_without_the_mirror(paths, mirror, capsys):
    archive = acquisition.obtain_archive(paths, mirror=mirror)
    assert (paths.raw / "msl-images.zip.sha256").read_text().endswith(
        f"{sha256_of(mirror / config.ARCHIVE_NAME)}  msl-images.zip\n")
    capsys.readouterr()
    assert acquisition.obtain_archive(paths, mirror=None, api_url="http://127.0.0.1:9/api") == archive
    out = capsys.readouterr().out
    assert "SHA-256 matches the mirror's, recorded in" in out and "not verified" not in out
    (mirror / "SHA256SUMS").write_text(f"{'0' * 64}  {config.ARCHIVE_NAME}\n")  # the mirror has since changed
    acquisition.obtain_archive(paths, mirror=mirror)  # its copy still matches the record, and it says which fails
    assert f"recorded in data/raw/msl-images.zip.sha256 when it was copied; not the one mirror {mirror} lists {'0' * 64}" \
        in capsys.readouterr().out.replace(str(paths.raw), "data/raw")
    with archive.open("r+b") as fh:
        fh.seek(10)
        fh.write(b"\x00\x01\x02")
    with pytest.raises(ChecksumError, match="not the mirror's"):
        acquisition.obtain_archive(paths, mirror=None, api_url="http://127.0.0.1:9/api")
    assert archive.exists()


def test_a_zenodo_download_drops_a_mirrors_checksum_record_which_would_describe_other_bytes(zenodo, paths):
    paths.raw.mkdir(parents=True)
    (paths.raw / "msl-images.zip.sha256").write_text(f"{'0' * 64}  msl-images.zip\n")
    acquisition.obtain_archive(paths, mirror=None, api_url=zenodo.url + "/api", progress=False)
    assert not (paths.raw / "msl-images.zip.sha256").exists()
    acquisition.obtain_archive(paths, mirror=None, api_url=zenodo.url + "/api", progress=False)  # the MD5 checks it


def test_a_mirror_folder_that_does_not_exist_is_an_error_even_with_an_archive_in_place(paths, mirror, tmp_path):
    acquisition.obtain_archive(paths, mirror=mirror)
    with pytest.raises(AcquisitionError, match=f"mirror folder {re.escape(str(tmp_path / 'typo'))} does not exist"):
        acquisition.obtain_archive(paths, mirror=tmp_path / "typo")


def test_obtain_archive_uses_MARSROVER_MIRROR_when_mirror_is_not_passed(paths, mirror, monkeypatch):
    monkeypatch.setenv(config.MIRROR_ENV, str(mirror))
    archive = acquisition.obtain_archive(paths, api_url="http://127.0.0.1:9/api")
    assert sha256_of(archive) == sha256_of(mirror / config.ARCHIVE_NAME)


def test_existing_archive_that_disagrees_with_the_mirror_is_refused(paths, mirror):
    acquisition.obtain_archive(paths, mirror=mirror)
    with paths.archive.open("r+b") as fh:
        fh.seek(10)
        fh.write(b"\x00\x01\x02")
    with pytest.raises(ChecksumError, match="delete it"):
        acquisition.obtain_archive(paths, mirror=mirror)
    assert paths.archive.exists()


def test_mirror_with_a_wrong_sha256sums_raises_and_creates_no_archive(paths, mirror):
    (mirror / "SHA256SUMS").write_text(f"{'0' * 64}  {config.ARCHIVE_NAME}\n")
    with pytest.raises(ChecksumError) as err:
        acquisition.obtain_archive(paths, mirror=mirror)
    assert "0" * 64 in str(err.value) and str(mirror / config.ARCHIVE_NAME) in str(err.value)
    assert not paths.archive.exists()
    assert hidden_leftovers(paths.raw) == []


def test_mirror_without_sha256sums_raises_naming_the_missing_file(paths, mirror):
    (mirror / "SHA256SUMS").unlink()
    with pytest.raises(AcquisitionError, match=re.escape(str(mirror / "SHA256SUMS"))):
        acquisition.obtain_archive(paths, mirror=mirror)
    assert not paths.archive.exists()


def test_mirror_without_the_archive_raises_naming_the_missing_file(paths, mirror):
    (mirror / config.ARCHIVE_NAME).unlink()
    with pytest.raises(AcquisitionError, match=re.escape(str(mirror / config.ARCHIVE_NAME))):
        acquisition.obtain_archive(paths, mirror=mirror)


def test_sha256sums_without_an_entry_for_the_archive_names_what_it_lists(paths, mirror):
    (mirror / "SHA256SUMS").write_text(f"{'0' * 64}  something-else.zip\n")
    with pytest.raises(AcquisitionError, match="no checksum for msl-images.zip .*something-else.zip"):
        acquisition.copy_from_mirror(mirror, paths.archive)


# --------------------------------------------------------------------------------------------
# safe_extract()


@pytest.fixture
def good_zip(paths) -> Path:
    return make_zip(paths.archive, GOOD_MEMBERS)


def assert_nothing_extracted(paths: config.DataPaths) -> None:
    assert not paths.interim.exists()
    assert hidden_leftovers(paths.root) == []


ABSOLUTE_EVIL = Path("/tmp/evil")


@pytest.mark.parametrize(
    "name",
    [
        "../evil.txt",
        "msl-images/../../evil.txt",
        "msl-images\\..\\..\\evil.txt",
        str(ABSOLUTE_EVIL),
        "C:/evil.txt",
        "C:\\evil.txt",
    ],
)
def test_safe_extract_refuses_members_that_escape_the_target(paths, name):
    evil_existed = ABSOLUTE_EVIL.exists()
    archive = make_zip(paths.archive, [*GOOD_MEMBERS, (name, b"pwned")])
    with pytest.raises(UnsafeArchiveError) as err:
        acquisition.safe_extract(archive, paths.interim, progress=False)
    assert repr(name) in str(err.value) and str(archive) in str(err.value)
    assert_nothing_extracted(paths)
    assert not (paths.root / "evil.txt").exists() and not (paths.root.parent / "evil.txt").exists()
    assert ABSOLUTE_EVIL.exists() == evil_existed


def test_safe_extract_refuses_symlink_members(paths):
    link = zipfile.ZipInfo("msl-images/calibrated/link.JPG")
    link.create_system = 3  # Unix
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    archive = make_zip(paths.archive, [*GOOD_MEMBERS, (link, b"/etc/passwd")])
    with pytest.raises(UnsafeArchiveError, match="symbolic link"):
        acquisition.safe_extract(archive, paths.interim, progress=False)
    assert_nothing_extracted(paths)


def test_safe_extract_refuses_duplicate_members(paths):
    name = GOOD_MEMBERS[1][0]
    with pytest.warns(UserWarning, match="Duplicate name"):
        archive = make_zip(paths.archive, [*GOOD_MEMBERS, (name, b"second copy")])
    with pytest.raises(UnsafeArchiveError, match="more than once"):
        acquisition.safe_extract(archive, paths.interim, progress=False)
    assert_nothing_extracted(paths)


def test_safe_extract_unpacks_everything_and_leaves_a_marker(paths, good_zip, capsys):
    assert acquisition.safe_extract(good_zip, paths.interim, progress=False) == paths.interim
    for name, data in GOOD_MEMBERS:
        if not name.endswith("/"):
            assert (paths.interim / name).read_bytes() == data
    assert paths.images_root == paths.interim / "msl-images"
    assert len(list((paths.images_root / "calibrated").glob("*.JPG"))) == 2
    assert (paths.interim / ".extracted").read_text().strip() == sha256_of(good_zip)
    assert hidden_leftovers(paths.root) == []
    assert "Extracted 4 members" in capsys.readouterr().out


def test_safe_extract_reuses_a_matching_extraction(paths, good_zip, monkeypatch, capsys):
    acquisition.safe_extract(good_zip, paths.interim, progress=False)
    capsys.readouterr()

    def must_not_run(*args):
        raise AssertionError("re-extracted although the marker matched")

    monkeypatch.setattr(acquisition, "_extract_member", must_not_run)
    assert acquisition.safe_extract(good_zip, paths.interim, progress=False) == paths.interim
    assert "Reusing" in capsys.readouterr().out


def test_safe_extract_replaces_an_extraction_of_another_archive(paths, good_zip):
    acquisition.safe_extract(good_zip, paths.interim, progress=False)
    newer = make_zip(paths.archive, [("msl-images/calibrated/9999.JPG", b"new")])
    acquisition.safe_extract(newer, paths.interim, progress=False)
    assert sorted(p.name for p in (paths.images_root / "calibrated").iterdir()) == ["9999.JPG"]
    assert (paths.interim / ".extracted").read_text().strip() == sha256_of(newer)
    assert hidden_leftovers(paths.root) == []


def test_safe_extract_replaces_a_folder_without_marker(paths, good_zip):
    (paths.interim / "msl-images").mkdir(parents=True)
    (paths.interim / "msl-images" / "half-written.JPG").write_bytes(b"partial")
    acquisition.safe_extract(good_zip, paths.interim, progress=False)
    assert not (paths.interim / "msl-images" / "half-written.JPG").exists()
    assert (paths.interim / ".extracted").exists()
    assert hidden_leftovers(paths.root) == []


def fail_on_second_member(monkeypatch):
    real = acquisition._extract_member
    calls = []

    def flaky(zf, info, root):
        calls.append(info.filename)
        if len(calls) == 2:
            raise OSError("disk full (simulated)")
        real(zf, info, root)

    monkeypatch.setattr(acquisition, "_extract_member", flaky)


def test_interrupted_extraction_leaves_neither_target_nor_temp_folder(paths, good_zip, monkeypatch):
    fail_on_second_member(monkeypatch)
    with pytest.raises(OSError, match="simulated"):
        acquisition.safe_extract(good_zip, paths.interim, progress=False)
    assert_nothing_extracted(paths)


def test_interrupted_replacement_keeps_the_previous_extraction(paths, good_zip, monkeypatch):
    acquisition.safe_extract(good_zip, paths.interim, progress=False)
    old_marker = (paths.interim / ".extracted").read_text()
    newer = make_zip(paths.archive, [("msl-images/a.JPG", b"a"), ("msl-images/b.JPG", b"b")])
    fail_on_second_member(monkeypatch)
    with pytest.raises(OSError, match="simulated"):
        acquisition.safe_extract(newer, paths.interim, progress=False)
    assert (paths.interim / ".extracted").read_text() == old_marker
    assert (paths.interim / GOOD_MEMBERS[1][0]).exists()
    assert hidden_leftovers(paths.root) == []


def test_truncated_zip_raises_acquisition_error_naming_the_archive(paths, good_zip):
    good_zip.write_bytes(good_zip.read_bytes()[: good_zip.stat().st_size // 2])
    with pytest.raises(AcquisitionError, match=re.escape(str(good_zip))):
        acquisition.safe_extract(good_zip, paths.interim, progress=False)
    assert_nothing_extracted(paths)


def test_zip_with_a_crc_error_raises_acquisition_error_and_cleans_up(paths):
    data = b"IMAGE-BYTES-" * 100
    members = [("msl-images/x.JPG", b"ok"), ("msl-images/y.JPG", data)]
    archive = make_zip(paths.archive, members, zipfile.ZIP_STORED)
    raw = bytearray(archive.read_bytes())
    at = raw.index(data) + 50  # stored, so the member's bytes appear verbatim
    raw[at] ^= 0xFF
    archive.write_bytes(bytes(raw))
    with pytest.raises(AcquisitionError, match=re.escape(str(archive)) + r".*corrupt"):
        acquisition.safe_extract(archive, paths.interim, progress=False)
    assert_nothing_extracted(paths)


def test_safe_extract_of_a_missing_archive_says_so(paths):
    with pytest.raises(AcquisitionError, match="does not exist"):
        acquisition.safe_extract(paths.archive, paths.interim, progress=False)
