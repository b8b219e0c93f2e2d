"""Fetch the MSL surface image archive and unpack it safely.

The archive (``msl-images.zip``, Zenodo record 1049137) comes either from Zenodo or from a local
mirror folder holding the zip and a ``SHA256SUMS`` file (``MARSROVER_MIRROR``). Every copy is
checked against a published checksum before it is used: Zenodo's MD5 for downloads, the mirror's
SHA-256 for mirror copies, recorded beside the archive so that a later run without the mirror can check
it. (Should Zenodo list no MD5, a download is reported as not verified, and the
MD5 of the bytes received is recorded, marked as computed here, so later runs still catch corruption.)
The mirror's zip is a repack, so its bytes (and checksum) differ from Zenodo's; that is expected and
each source is checked against its own reference.

Nothing half-finished is ever left under a final name: downloads grow in a ``.part`` file that is
renamed when complete (and resumed with an HTTP Range request after an interruption), mirror
copies go through a temporary file, and extraction happens in a temporary folder that is renamed
into place only after every member has been written.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import shutil
import stat
import time
import uuid
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from urllib.parse import urljoin

import requests
import urllib3
from tqdm.auto import tqdm

from marsrover import config

__all__ = [
    "AcquisitionError",
    "DownloadError",
    "HTTPClientError",
    "ChecksumError",
    "UnsafeArchiveError",
    "RemoteFile",
    "USER_AGENT",
    "EXTRACTED_MARKER",
    "zenodo_file_info",
    "download",
    "file_sha256",
    "file_md5",
    "read_sha256sums",
    "verify_sha256",
    "copy_from_mirror",
    "obtain_archive",
    "safe_extract",
]

log = logging.getLogger(__name__)

SHA256SUMS_NAME = "SHA256SUMS"
MD5_SIDECAR_SUFFIX = ".md5"
SHA256_SIDECAR_SUFFIX = ".sha256"
EXTRACTED_MARKER = ".extracted"
_HASH_CHUNK = 1 << 20


def _package_version() -> str:
    try:
        return metadata.version("marsrover")
    except metadata.PackageNotFoundError:  # running from a checkout that was never installed
        return "dev"


# Zenodo asks API clients to identify themselves.
USER_AGENT = f"marsrover/{_package_version()} (+https://github.com/{config.GITHUB_REPO})"


# --------------------------------------------------------------------------------------------
# Errors


class AcquisitionError(RuntimeError):
    """The archive could not be obtained or unpacked."""


class DownloadError(AcquisitionError):
    """An HTTP transfer failed (bad status, or retries exhausted)."""


class HTTPClientError(DownloadError):
    """The server answered 4xx (other than 429): not retried. ``status`` and ``url`` say which."""

    def __init__(self, message: str, *, status: int, url: str):
        super().__init__(message)
        self.status = status
        self.url = url


class ChecksumError(AcquisitionError):
    """A file's size or checksum differs from the published one."""


class UnsafeArchiveError(AcquisitionError):
    """A zip member would escape the target folder or is not a plain file or folder."""


# --------------------------------------------------------------------------------------------
# Zenodo metadata


@dataclass(frozen=True)
class RemoteFile:
    """One file of a Zenodo record: where to fetch it and what it should hash to."""

    name: str
    url: str
    size: int | None
    md5: str | None


@contextlib.contextmanager
def _session_scope(session: requests.Session | None) -> Iterator[requests.Session]:
    """Use the caller's session as is, or a private one that is closed afterwards."""
    if session is not None:
        yield session
        return
    with requests.Session() as own:
        yield own


_MD5_HEX = re.compile(r"^[0-9a-fA-F]{32}$")


def _parse_md5(checksum: object) -> str | None:
    """``"md5:<hex>"`` or a bare 32-digit hex (legacy API) -> lower-case hex; else None."""
    if not isinstance(checksum, str):
        return None
    algo, sep, value = checksum.strip().partition(":")
    if not sep:
        algo, value = "md5", algo
    if algo.lower() != "md5" or not _MD5_HEX.match(value):
        return None
    return value.lower()


def _file_entries(record: dict) -> list[dict]:
    files = record.get("files")
    if isinstance(files, dict):  # the /files endpoint wraps the list in {"entries": [...]}
        files = files.get("entries")
        if isinstance(files, dict):
            files = list(files.values())
    if not isinstance(files, list):
        return []
    return [entry for entry in files if isinstance(entry, dict)]


def _entry_name(entry: dict) -> str | None:
    return entry.get("key") or entry.get("filename")


def zenodo_file_info(
    record_id: str = config.ZENODO_RECORD_ID,
    filename: str = config.ARCHIVE_NAME,
    api_url: str = config.ZENODO_API_URL,
    session: requests.Session | None = None,
    timeout: float = 30,
) -> RemoteFile:
    """Look up ``filename`` in a Zenodo record: download URL, size and MD5.

    Understands both the current (InvenioRDM) record JSON and the legacy one.
    """
    record_url = f"{api_url.rstrip('/')}/records/{record_id}"
    with _session_scope(session) as sess:
        try:
            resp = sess.get(
                record_url,
                headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
                timeout=timeout,
            )
        except requests.RequestException as exc:
            raise DownloadError(
                f"could not fetch Zenodo record {record_id} from {record_url}: {exc}. Without internet, "
                f"point {config.MIRROR_ENV} at a folder holding {filename} and its SHA256SUMS"
            ) from exc
        if resp.status_code != 200:
            raise DownloadError(
                f"Zenodo answered HTTP {resp.status_code} for record {record_id} at {record_url}"
            )
        try:
            record = resp.json()
        except ValueError as exc:
            raise DownloadError(
                f"Zenodo record {record_id} at {record_url} is not valid JSON: {exc}"
            ) from exc

    entries = _file_entries(record) if isinstance(record, dict) else []
    for entry in entries:
        if _entry_name(entry) != filename:
            continue
        links = entry.get("links") or {}
        # "content"/"download" are the file's bytes; in the new API "self" already points at
        # ".../content", in the legacy one at the bucket object: both serve the bytes.
        link = links.get("content") or links.get("download") or links.get("self")
        if not link:
            raise AcquisitionError(
                f"Zenodo record {record_id} ({record_url}) lists {filename} without a download link"
            )
        size = entry.get("size", entry.get("filesize"))
        return RemoteFile(
            name=filename,
            url=urljoin(record_url, link),
            size=int(size) if size is not None else None,
            md5=_parse_md5(entry.get("checksum")),
        )
    listed = ", ".join(sorted(str(_entry_name(e)) for e in entries)) or "no files"
    raise AcquisitionError(
        f"Zenodo record {record_id} ({record_url}) has no file named {filename!r}; it lists: {listed}"
    )


# --------------------------------------------------------------------------------------------
# Download with resume and retries


class _Retryable(Exception):
    """A transient failure: the attempt may be repeated (the .part file is kept)."""


# What a flaky network looks like from requests/urllib3: worth another attempt.
_TRANSIENT_ERRORS = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
    urllib3.exceptions.ProtocolError,
    urllib3.exceptions.ReadTimeoutError,
)

_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)\s*$", re.IGNORECASE)


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """``Content-Range`` -> (first byte, total length), either None when absent/unknown."""
    match = _CONTENT_RANGE.match(value or "")
    if not match:
        return None, None
    first = int(match.group(1)) if match.group(1) is not None else None
    total = int(match.group(3)) if match.group(3) != "*" else None
    return first, total


def _int_header(resp: requests.Response, name: str) -> int | None:
    try:
        return int(resp.headers[name])
    except (KeyError, ValueError):
        return None


def _fetch_once(
    sess: requests.Session,
    url: str,
    part: Path,
    *,
    expected_size: int | None,
    timeout: float,
    progress: bool,
    chunk_size: int,
    label: str,
) -> None:
    """One attempt: continue ``part`` from where it stops. Returns when the body is complete."""
    have = part.stat().st_size if part.exists() else 0
    # identity: Range offsets and Content-Length must count the bytes we store.
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
    with sess.get(url, headers=headers, stream=True, timeout=timeout) as resp:
        status = resp.status_code
        if status == 416 and have:
            # Nothing left to send: the part file is complete, unless it belongs to another
            # (longer) file, which the server's total length or the expected size reveals.
            _, total = _content_range(resp.headers.get("Content-Range"))
            reference = total if total is not None else expected_size
            if reference is not None and have != reference:
                part.unlink()
                raise _Retryable(f"stale partial file ({have} bytes, file has {reference}); restarting")
            return
        if status >= 500 or status == 429:  # 429: Zenodo's rate limiter, worth waiting for
            raise _Retryable(f"HTTP {status} from {url}")
        if status >= 400:
            raise HTTPClientError(
                f"HTTP {status} ({resp.reason}) for {url}; not retrying a client error", status=status, url=url
            )
        if status == 206:
            first, total = _content_range(resp.headers.get("Content-Range"))
            if first != have:
                part.unlink()
                raise _Retryable(f"server sent a range starting at {first}, not {have}; restarting")
            mode, offset = "ab", have
        elif status == 200:
            if have:
                log.warning("%s ignored the Range request; downloading %s from the start", url, label)
            mode, offset, total = "wb", 0, None
        else:
            raise DownloadError(f"unexpected HTTP {status} for {url}")

        body_length = _int_header(resp, "Content-Length")
        if total is None and body_length is not None:
            total = offset + body_length
        written = 0
        with open(part, mode) as fh, tqdm(
            total=total,
            initial=offset,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=label,
            disable=not progress,
            leave=False,
        ) as bar:
            for chunk in resp.iter_content(chunk_size=chunk_size):
                fh.write(chunk)
                written += len(chunk)
                bar.update(len(chunk))
        if body_length is not None and written < body_length:
            # Older urllib3 does not enforce Content-Length; a short body is a dropped connection.
            raise _Retryable(f"connection closed after {written} of {body_length} bytes")


def download(
    url: str,
    dest: Path,
    *,
    expected_md5: str | None = None,
    expected_size: int | None = None,
    retries: int = 5,
    backoff: float = 1.0,
    timeout: float = 30,
    session: requests.Session | None = None,
    progress: bool = True,
    chunk_size: int = 1 << 20,
) -> Path:
    """Download ``url`` to ``dest``, resuming and retrying; verify size/MD5; rename into place.

    The body grows in ``<dest>.part``; an existing part file is continued with a Range request.
    Transient failures (connection drops, timeouts, truncated bodies, 5xx, 429) are retried up to
    ``retries`` times, sleeping ``backoff * 2**attempt`` seconds in between. ``dest`` only ever
    appears complete and verified; an existing ``dest`` is overwritten.
    """
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)

    with _session_scope(session) as sess:
        attempt = 0
        while True:
            try:
                _fetch_once(
                    sess,
                    url,
                    part,
                    expected_size=expected_size,
                    timeout=timeout,
                    progress=progress,
                    chunk_size=chunk_size,
                    label=dest.name,
                )
                break
            except (_Retryable, *_TRANSIENT_ERRORS) as exc:
                if attempt >= retries:
                    raise DownloadError(
                        f"giving up on {url} after {attempt + 1} attempts: {exc} "
                        f"(partial data kept in {part}; running again resumes it)"
                    ) from exc
                delay = backoff * 2**attempt
                log.warning(
                    "download of %s failed (%s); retry %d/%d in %.1fs", url, exc, attempt + 1, retries, delay
                )
                if delay > 0:
                    time.sleep(delay)
                attempt += 1
            except requests.RequestException as exc:  # bad URL, redirect loop, ...: retrying won't help
                raise DownloadError(f"cannot download {url}: {exc}") from exc

    if not part.exists():  # e.g. a 416 for a range we never asked for
        raise DownloadError(f"download of {url} produced no data at {part}")
    actual_size = part.stat().st_size
    if expected_size is not None and actual_size != expected_size:
        part.unlink()
        raise ChecksumError(
            f"size mismatch for {url}: expected {expected_size} bytes, got {actual_size} "
            f"(deleted {part}; run again to download afresh)"
        )
    if expected_md5 is not None:
        actual_md5 = file_md5(part)
        if actual_md5 != expected_md5.lower():
            part.unlink()
            raise ChecksumError(
                f"MD5 mismatch for {url}: expected {expected_md5.lower()}, got {actual_md5} "
                f"(deleted {part}; run again to download afresh)"
            )
    os.replace(part, dest)
    return dest


# --------------------------------------------------------------------------------------------
# Checksums


def _file_digest(path: Path, algo: str) -> str:
    """Hex digest of a file, read in chunks so a 60 MB archive never sits in memory."""
    digest = hashlib.new(algo)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_HASH_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    return _file_digest(Path(path), "sha256")


def file_md5(path: Path) -> str:
    return _file_digest(Path(path), "md5")


_SHA256SUMS_LINE = re.compile(r"^([0-9a-fA-F]{64}) [ *](.+)$")


def read_sha256sums(path: Path) -> dict[str, str]:
    """Parse ``sha256sum`` output (``<hex>  <name>`` or ``<hex> *<name>``) into {name: hex}."""
    path = Path(path)
    sums: dict[str, str] = {}
    with open(path, encoding="utf-8") as fh:
        for lineno, raw in enumerate(fh, start=1):
            line = raw.rstrip("\r\n")
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            match = _SHA256SUMS_LINE.match(line)
            if not match:
                raise AcquisitionError(
                    f"{path}, line {lineno}: expected '<64 hex digits>  <file name>', got {line!r}"
                )
            digest, name = match.group(1).lower(), match.group(2)
            name = name[2:] if name.startswith("./") else name
            if sums.get(name, digest) != digest:
                raise AcquisitionError(
                    f"{path}, line {lineno}: {name} is listed twice with different checksums"
                )
            sums[name] = digest
    return sums


def verify_sha256(path: Path, expected: str) -> None:
    """Raise ChecksumError unless ``path`` hashes to ``expected``."""
    actual = file_sha256(path)
    if actual != expected.strip().lower():
        raise ChecksumError(
            f"SHA-256 mismatch for {path}: expected {expected.strip().lower()}, got {actual}. "
            "The file is corrupt or incomplete, or the checksum list belongs to another version of it."
        )


# --------------------------------------------------------------------------------------------
# Mirror


def _sibling(path: Path, tag: str) -> Path:
    """A fresh hidden name beside ``path``: same filesystem, so os.replace onto ``path`` is atomic.

    (Not tempfile.mkstemp/mkdtemp: their 0600/0700 modes would stick to the final file/folder.)
    """
    return path.with_name(f".{path.name}.{tag}-{uuid.uuid4().hex[:12]}")


def _mirror_checksum(mirror: Path, filename: str) -> str:
    """The SHA-256 that the mirror's SHA256SUMS publishes for ``filename``."""
    sums_path = mirror / SHA256SUMS_NAME
    if not sums_path.is_file():
        raise AcquisitionError(
            f"mirror {mirror} has no {SHA256SUMS_NAME} (expected {sums_path}); "
            "a mirror must publish checksums so copies can be verified"
        )
    sums = read_sha256sums(sums_path)
    if filename not in sums:
        listed = ", ".join(sorted(sums)) or "nothing"
        raise AcquisitionError(f"{sums_path} has no checksum for {filename} (it lists: {listed})")
    return sums[filename]


def _existing_mirror(mirror: Path) -> Path:
    """``mirror`` as a Path; an error naming the setting when no such folder exists (a mistyped path is not a
    mirror without checksums)."""
    mirror = Path(mirror)
    if not mirror.is_dir():
        raise AcquisitionError(f"mirror folder {mirror} does not exist (check {config.MIRROR_ENV})")
    return mirror


def copy_from_mirror(mirror: Path, dest: Path, filename: str = config.ARCHIVE_NAME) -> Path:
    """Copy ``mirror/filename`` to ``dest``, checked against ``mirror/SHA256SUMS`` before and after."""
    mirror, dest = _existing_mirror(mirror), Path(dest)
    source = mirror / filename
    if not source.is_file():
        raise AcquisitionError(f"mirror {mirror} has no {filename} (expected {source})")
    expected = _mirror_checksum(mirror, filename)
    # Check the source first: a bad mirror must not produce a copy at all.
    verify_sha256(source, expected)

    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(dest, "tmp")
    try:
        with open(source, "rb") as src, open(tmp, "xb") as dst:  # not copyfile: keep umask perms
            shutil.copyfileobj(src, dst, _HASH_CHUNK)
        verify_sha256(tmp, expected)  # the copy itself, before it takes the final name
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return dest


# --------------------------------------------------------------------------------------------
# The archive, from wherever


class _FromEnvironment:
    """Sentinel: ``mirror`` not passed, so ``MARSROVER_MIRROR`` decides."""

    def __repr__(self) -> str:
        return "<mirror from MARSROVER_MIRROR>"


_MIRROR_FROM_ENV = _FromEnvironment()


def _md5_sidecar(archive: Path) -> Path:
    return archive.with_name(archive.name + MD5_SIDECAR_SUFFIX)


# heads a sidecar whose MD5 was computed here because Zenodo published none (``md5sum -c`` skips '#' lines)
_SELF_COMPUTED = "# computed from the downloaded bytes: Zenodo published no MD5"


def _write_md5_sidecar(archive: Path, md5: str, *, published: bool = True) -> None:
    """Record the archive's MD5 in ``md5sum`` format, so later runs (and ``md5sum -c``) can check offline.
    ``published``: Zenodo's own checksum; otherwise the sidecar says the MD5 was computed from our copy."""
    sidecar = _md5_sidecar(archive)
    tmp = sidecar.with_name(sidecar.name + ".tmp")
    tmp.write_text(("" if published else _SELF_COMPUTED + "\n") + f"{md5}  {archive.name}\n", encoding="utf-8")
    os.replace(tmp, sidecar)


def _read_md5_sidecar(archive: Path) -> tuple[str, bool] | None:
    """(MD5, whether Zenodo published it) from the sidecar, or None without one."""
    sidecar = _md5_sidecar(archive)
    if not sidecar.is_file():
        return None
    lines = sidecar.read_text(encoding="utf-8").splitlines()
    published = _SELF_COMPUTED not in lines
    fields = " ".join(line for line in lines if not line.startswith("#")).split()
    if not fields or not _MD5_HEX.match(fields[0]):
        raise AcquisitionError(
            f"{sidecar} does not hold an MD5 checksum; delete it and {archive} and run again"
        )
    return fields[0].lower(), published


def _sha256_sidecar(archive: Path) -> Path:
    return archive.with_name(archive.name + SHA256_SIDECAR_SUFFIX)


def _write_sha256_sidecar(archive: Path, sha256: str, mirror: Path) -> None:
    """Record, in ``sha256sum`` format, the SHA-256 a mirror listed for the archive copied from it, so that a
    later run without the mirror (``MARSROVER_MIRROR`` unset) still checks the archive offline."""
    sidecar = _sha256_sidecar(archive)
    tmp = sidecar.with_name(sidecar.name + ".tmp")
    tmp.write_text(f"# listed in {mirror / SHA256SUMS_NAME} when copied from there\n{sha256}  {archive.name}\n",
                   encoding="utf-8")
    os.replace(tmp, sidecar)


def _read_sha256_sidecar(archive: Path) -> str | None:
    """The SHA-256 recorded when the archive was copied from a mirror, or None without a record."""
    sidecar = _sha256_sidecar(archive)
    if not sidecar.is_file():
        return None
    sums = read_sha256sums(sidecar)
    if archive.name not in sums:
        raise AcquisitionError(f"{sidecar} holds no SHA-256 for {archive.name}; delete it and run again")
    return sums[archive.name]


def _verify_existing(archive: Path, mirror: Path | None) -> None:
    """Check an archive that is already in place against every reference available offline.

    References: the mirror's SHA256SUMS (when a mirror is configured), the SHA-256 sidecar written when it
    was copied from a mirror and the MD5 sidecar written when it was downloaded from Zenodo. One match is
    enough: an archive downloaded from Zenodo legitimately differs from the mirror's repack. If no reference
    exists, accept it and say so.
    """
    mismatches: list[str] = []
    listed = None  # the SHA-256 the mirror lists, where it lists one
    if mirror is not None:
        try:
            listed = _mirror_checksum(Path(mirror), archive.name)
        except AcquisitionError as exc:
            print(f"Cannot check {config.display_path(archive)} against the mirror: {exc}")
    actual = None  # the archive's SHA-256, hashed once for either reference
    if listed is not None:
        actual = file_sha256(archive)
        if actual == listed:
            with contextlib.suppress(OSError):  # a read-only data/raw: checked now, just not recorded
                _write_sha256_sidecar(archive, listed, Path(mirror))  # so a run without the mirror can check it
            print(f"Using existing {config.display_path(archive)} (SHA-256 matches mirror {mirror})")
            return
        mismatches.append(f"SHA-256 {actual}, mirror {mirror} lists {listed}")
    if (copied := _read_sha256_sidecar(archive)) is not None:
        actual = actual or file_sha256(archive)
        if actual == copied:
            print(f"Using existing {config.display_path(archive)} (SHA-256 matches the mirror's, recorded in "
                  f"{config.display_path(_sha256_sidecar(archive))} when it was copied"
                  + (f"; not the one mirror {mirror} lists {listed}" if listed is not None else "") + ")")
            return
        mismatches.append(f"SHA-256 {actual}, not the mirror's {copied} (per {_sha256_sidecar(archive)})")
    recorded = _read_md5_sidecar(archive)
    if recorded is not None:
        md5, published = recorded
        whose = "Zenodo's" if published else "the one computed at download (Zenodo published none)"
        actual = file_md5(archive)
        if actual == md5:
            print(f"Using existing {config.display_path(archive)} (MD5 matches {whose}, recorded in "
                  f"{config.display_path(_md5_sidecar(archive))})")
            return
        mismatches.append(f"MD5 {actual}, not {whose} {md5} (per {_md5_sidecar(archive)})")
    if mismatches:
        # Never delete the raw archive behind the user's back: say what to do instead.
        raise ChecksumError(
            f"existing archive {archive} fails verification: {'; '.join(mismatches)}. "
            f"It is corrupt or from elsewhere; delete it (and {_md5_sidecar(archive).name} and "
            f"{_sha256_sidecar(archive).name} where present) and run again to fetch a fresh copy."
        )
    print(f"Using existing {config.display_path(archive)} (not verified: no mirror SHA256SUMS and no checksum "
          "recorded when it was fetched)")


def obtain_archive(
    paths: config.DataPaths | None = None,
    *,
    mirror: Path | None | _FromEnvironment = _MIRROR_FROM_ENV,
    api_url: str = config.ZENODO_API_URL,
    record_id: str = config.ZENODO_RECORD_ID,
    progress: bool = True,
    session: requests.Session | None = None,
) -> Path:
    """Make sure ``data/raw/msl-images.zip`` exists and is verified; return its path.

    ``mirror`` left out means ``MARSROVER_MIRROR`` (if set); ``mirror=None`` forces Zenodo.
    An existing archive is verified and reused, never fetched again, and never deleted.
    """
    paths = paths if paths is not None else config.data_paths()
    if mirror is _MIRROR_FROM_ENV:
        mirror = config.mirror_dir()
    if mirror is not None:
        mirror = _existing_mirror(mirror)
    archive = paths.archive

    if archive.exists():
        _verify_existing(archive, mirror)
        return archive

    archive.parent.mkdir(parents=True, exist_ok=True)
    if mirror is not None:
        copy_from_mirror(mirror, archive, filename=config.ARCHIVE_NAME)
        # A sidecar left from an earlier Zenodo download would describe other bytes.
        _md5_sidecar(archive).unlink(missing_ok=True)
        _write_sha256_sidecar(archive, _mirror_checksum(mirror, config.ARCHIVE_NAME), mirror)
        print(f"Copied {config.ARCHIVE_NAME} from mirror {mirror} to {config.display_path(archive)} (SHA-256 verified)")
        return archive

    info = zenodo_file_info(
        record_id=record_id, filename=config.ARCHIVE_NAME, api_url=api_url, session=session
    )
    download(
        info.url,
        archive,
        expected_md5=info.md5,
        expected_size=info.size,
        session=session,
        progress=progress,
    )
    # Zenodo's MD5 has just been checked; without one, record the bytes we got so later runs
    # can at least detect corruption. A mirror's record would describe other bytes.
    _sha256_sidecar(archive).unlink(missing_ok=True)
    _write_md5_sidecar(archive, info.md5 or file_md5(archive), published=bool(info.md5))
    checked = "MD5 verified" if info.md5 else "no MD5 published, not verified"
    print(
        f"Downloaded {config.ARCHIVE_NAME} from Zenodo record {record_id} ({info.url}) "
        f"to {config.display_path(archive)} ({checked})"
    )
    return archive


# --------------------------------------------------------------------------------------------
# Extraction


_DRIVE = re.compile(r"^[A-Za-z]:")


def _member_problem(info: zipfile.ZipInfo) -> str | None:
    """Why this member must not be extracted, or None if it is a plain, contained path."""
    name = info.filename
    if not name or "\x00" in name:
        return "has an empty or NUL-containing name"
    # Windows tools treat backslashes as separators; so does a Windows extractor.
    normalized = name.replace("\\", "/")
    if normalized.startswith("/"):
        return "is an absolute path"
    if _DRIVE.match(normalized):
        return "starts with a drive letter"
    if ".." in normalized.split("/"):
        return "contains a '..' component"
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        return "is a symbolic link"
    return None


def _member_key(info: zipfile.ZipInfo) -> str:
    parts = [p for p in info.filename.replace("\\", "/").split("/") if p not in ("", ".")]
    return "/".join(parts)


def _validate_members(members: list[zipfile.ZipInfo], archive: Path) -> None:
    """Refuse the whole archive if any member is unsafe; runs before anything is written."""
    seen: set[str] = set()
    for info in members:
        problem = _member_problem(info)
        if problem is None:
            key = _member_key(info)
            if not key:
                problem = "names no file"
            elif key in seen:
                problem = "appears more than once"
            seen.add(key)
        if problem is not None:
            raise UnsafeArchiveError(
                f"refusing to extract {archive}: member {info.filename!r} {problem}; "
                "nothing was extracted"
            )


def _extract_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, root: Path) -> None:
    """Write one validated member under ``root`` (plain files and folders only)."""
    target = root.joinpath(*_member_key(info).split("/"))
    if not target.resolve().is_relative_to(root.resolve()):  # belt and braces after validation
        raise UnsafeArchiveError(f"member {info.filename!r} resolves outside {root}")
    if info.is_dir():
        target.mkdir(parents=True, exist_ok=True)
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    with zf.open(info) as src, open(target, "xb") as dst:  # "x": a collision is a bug, not an overwrite
        shutil.copyfileobj(src, dst, _HASH_CHUNK)


def _read_marker(dest_dir: Path) -> str | None:
    marker = dest_dir / EXTRACTED_MARKER
    try:
        return marker.read_text(encoding="utf-8").strip()
    except OSError:
        return None


def safe_extract(archive: Path, dest_dir: Path, *, progress: bool = True) -> Path:
    """Extract ``archive`` so that ``dest_dir`` appears complete or not at all.

    Every member is validated before anything is written. Extraction goes to a temporary folder
    beside ``dest_dir`` (same filesystem, so the final rename is atomic) which gets a marker file
    ``.extracted`` holding the archive's SHA-256. A ``dest_dir`` whose marker matches is reused;
    one with a missing or different marker is replaced once the new tree is complete.
    """
    archive, dest_dir = Path(archive), Path(dest_dir)
    if not archive.is_file():
        raise AcquisitionError(f"archive {archive} does not exist; obtain it first")
    digest = file_sha256(archive)
    if dest_dir.is_dir() and _read_marker(dest_dir) == digest:
        print(f"Reusing {config.display_path(dest_dir)}: already extracted from {archive.name} (SHA-256 {digest[:12]}...)")
        return dest_dir

    corrupt_hint = "delete it and run again to fetch a fresh copy"
    try:
        zf = zipfile.ZipFile(archive)
    except zipfile.BadZipFile as exc:
        raise AcquisitionError(
            f"{archive} is not a readable zip archive ({exc}); {corrupt_hint}"
        ) from exc

    with zf:
        members = zf.infolist()
        _validate_members(members, archive)

        dest_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = _sibling(dest_dir, "tmp")
        tmp.mkdir()
        try:
            with tqdm(members, desc=f"extract {archive.name}", unit="file", disable=not progress, leave=False) as bar:
                for info in bar:
                    _extract_member(zf, info, tmp)
            (tmp / EXTRACTED_MARKER).write_text(digest + "\n", encoding="utf-8")
        except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise AcquisitionError(f"{archive} is corrupt ({exc}); {corrupt_hint}") from exc
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    # Swap: move an old tree aside, put the new one in place, then drop the old one. (POSIX has
    # no portable atomic swap of non-empty folders; the gap is two renames long.)
    aside: Path | None = None
    try:
        if dest_dir.exists() or dest_dir.is_symlink():
            aside = _sibling(dest_dir, "old")
            os.replace(dest_dir, aside)
        os.replace(tmp, dest_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if aside is not None and not dest_dir.exists():
            os.replace(aside, dest_dir)  # put the previous tree back
        raise
    if aside is not None:
        if aside.is_dir() and not aside.is_symlink():
            shutil.rmtree(aside, ignore_errors=True)
        else:
            aside.unlink(missing_ok=True)
        print(f"Replaced {config.display_path(dest_dir)} (its marker did not match {archive.name})")
    print(f"Extracted {len(members)} members of {archive.name} into {config.display_path(dest_dir)}")
    return dest_dir
