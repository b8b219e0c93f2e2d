"""Download raw rover images and their metadata from NASA's public raw-image feeds.

Two feeds (not the retired api.nasa.gov "mars-photos" API):

- Mars 2020 (Perseverance): ``https://mars.nasa.gov/rss/api/?feed=raw_images&category=mars2020
  &feedtype=json&num=<per page>&page=<n>``, sol range as ``condition_2=<A>:sol:gte`` and
  ``condition_3=<B>:sol:lte``. Items: ``imageid``, ``sol``, ``camera.instrument``,
  ``image_files.{small,medium,large,full_res}``, ``date_taken_utc``, ``sample_type``. The page
  wrapper has changed over time (``{"images": [...], "total_results": N}``, ``{"items": [...],
  "total": N}``, a bare list): all are accepted.
- MSL (Curiosity): ``https://mars.nasa.gov/api/v1/raw_image_items/`` with ``order``, ``per_page``,
  ``page``, ``condition_1=msl:mission`` and the same sol conditions; answers carry ``items``,
  ``more``, ``total``, ``page``, ``per_page``; items ``imageid``, ``sol``, ``instrument``,
  ``https_url``, ``is_thumbnail``, ``date_taken``. Thumbnails are skipped (for Mars 2020 too:
  ``sample_type`` "Thumbnail").

Images land in ``data/raw/<mission>/<image id>.<ext>`` beside ``metadata.csv`` (``image_id, sol,
instrument, date_taken, url, local_path``; ``local_path`` relative to that folder). The client is
polite and safe to rerun: one ``requests.Session``, the project's User-Agent, retries with
exponential backoff on 5xx/429, timeouts, dropped connections and truncated bodies (through
:func:`marsrover.acquisition.download`, which also writes each file under a ``.part`` name and
renames it only when complete), a clear error on 4xx. Images already on disk are skipped and the
metadata is merged by image id, never duplicated.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import pandas as pd
import requests
from tqdm.auto import tqdm

from . import acquisition, atomic, config
from .acquisition import USER_AGENT, DownloadError, HTTPClientError

__all__ = [
    "MISSIONS",
    "MARS2020_FEED_URL",
    "MSL_FEED_URL",
    "METADATA_NAME",
    "METADATA_COLUMNS",
    "SIZES",
    "FeedError",
    "FeedClientError",
    "RawImage",
    "FetchResult",
    "parse_sols",
    "get_json",
    "iter_mars2020",
    "iter_msl",
    "iter_feed",
    "read_metadata",
    "fetch_raw",
]

log = logging.getLogger(__name__)

MARS2020_FEED_URL = "https://mars.nasa.gov/rss/api/"
MSL_FEED_URL = "https://mars.nasa.gov/api/v1/raw_image_items/"
MISSIONS = ("mars2020", "msl")
SIZES = ("small", "medium", "large")
METADATA_NAME = "metadata.csv"
METADATA_COLUMNS = ["image_id", "sol", "instrument", "date_taken", "url", "local_path"]
DEFAULT_PER_PAGE = 50
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


class FeedError(DownloadError):
    """A feed page could not be fetched or understood (the message names the URL)."""


class FeedClientError(FeedError, HTTPClientError):
    """A feed page answered 4xx: ``status`` and ``url`` say which."""


@dataclass(frozen=True)
class RawImage:
    """One image listed by a feed."""

    image_id: str
    sol: int | None
    instrument: str
    date_taken: str
    url: str


@dataclass
class FetchResult:
    """What :func:`fetch_raw` did; ``metadata`` is the merged ``metadata.csv``."""

    out_dir: Path
    listed: int = 0
    downloaded: int = 0
    skipped: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    metadata: pd.DataFrame | None = None

    def lines(self) -> list[str]:
        text = [f"{self.listed} images listed: {self.downloaded} downloaded, {self.skipped} already here, "
                f"{len(self.failed)} failed; metadata in {self.out_dir / METADATA_NAME}"]
        text += [f"  failed: {image_id}: {error}" for image_id, error in self.failed]
        return text


def parse_sols(text: str | None) -> tuple[int | None, int | None]:
    """``"A-B"`` -> (A, B); ``"A"`` -> (A, A); ``"A-"`` / ``"-B"`` leave that end open; None -> (None, None)."""
    if text is None or not str(text).strip():
        return None, None
    match = re.fullmatch(r"\s*(\d*)\s*(-?)\s*(\d*)\s*", str(text))
    if not match or not (match.group(1) or match.group(3)) or (match.group(3) and not match.group(2)):
        raise ValueError(f"sol range must look like A-B, A, A- or -B (whole numbers), got {text!r}")
    first = int(match.group(1)) if match.group(1) else None
    last = int(match.group(3)) if match.group(3) else (None if match.group(2) else first)
    if first is not None and last is not None and first > last:
        raise ValueError(f"sol range {text!r} is empty: {first} > {last}")
    return first, last


def _sol_conditions(sols: tuple[int | None, int | None]) -> dict[str, str]:
    first, last = sols
    conditions = {}
    if first is not None:
        conditions["condition_2"] = f"{first}:sol:gte"
    if last is not None:
        conditions["condition_3"] = f"{last}:sol:lte"
    return conditions


# --------------------------------------------------------------------------------------------
# HTTP


def get_json(session: requests.Session, url: str, params: dict | None = None, *, retries: int = 5,
             backoff: float = 1.0, timeout: float = 30):
    """GET ``url`` and decode JSON, retrying transient failures like :func:`acquisition.download`.

    5xx, 429, timeouts and dropped connections are retried up to ``retries`` times, sleeping
    ``backoff * 2**attempt`` seconds in between; a 4xx raises :class:`FeedError` at once, naming
    the URL and the status.
    """
    headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
    attempt = 0
    while True:
        shown = url
        try:
            resp = session.get(url, params=params, headers=headers, timeout=timeout)
            shown = resp.url
            if resp.status_code >= 500 or resp.status_code == 429:
                raise acquisition._Retryable(f"HTTP {resp.status_code} from {shown}")
            if resp.status_code >= 400:
                raise FeedClientError(f"HTTP {resp.status_code} ({resp.reason}) for {shown}; not retrying a client error",
                                      status=resp.status_code, url=shown)
            try:
                return resp.json()
            except ValueError as error:
                raise FeedError(f"{shown} did not answer JSON ({error}); it starts with {resp.text[:120]!r}") from None
        except (acquisition._Retryable, *acquisition._TRANSIENT_ERRORS) as error:
            if attempt >= retries:
                raise FeedError(f"giving up on {shown} after {attempt + 1} attempts: {error}") from error
            delay = backoff * 2**attempt
            log.warning("feed request %s failed (%s); retry %d/%d in %.1fs", shown, error, attempt + 1, retries, delay)
            if delay > 0:
                time.sleep(delay)
            attempt += 1
        except requests.RequestException as error:
            raise FeedError(f"cannot fetch {shown}: {error}") from error


# --------------------------------------------------------------------------------------------
# Feeds


def _page_items(page, url: str) -> tuple[list[dict], int | None, bool | None]:
    """(items, total, more) from any wrapper shape the feeds have used."""
    if isinstance(page, list):
        return [item for item in page if isinstance(item, dict)], None, None
    if not isinstance(page, dict):
        raise FeedError(f"{url} answered {type(page).__name__}, not a list of images")
    for key in ("images", "items", "data", "results", "photos"):
        if isinstance(page.get(key), list):
            items = [item for item in page[key] if isinstance(item, dict)]
            break
    else:
        raise FeedError(f"{url} answered an object without a list of images (keys: {sorted(page)})")
    total = None
    for key in ("total_results", "total", "count"):
        try:
            total = int(page[key])
            break
        except (KeyError, TypeError, ValueError):
            continue
    more = page.get("more")
    return items, total, bool(more) if more is not None else None


def _int_or_none(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _paged(session: requests.Session, base_url: str, params: dict, *, per_page: int, page_param: str,
           retries: int, backoff: float, timeout: float) -> Iterator[dict]:
    """Every item of every page, until an empty page, ``more: false`` or the stated total."""
    seen: set[str] = set()
    page_number = 0
    while True:
        page = get_json(session, base_url, {**params, page_param: page_number},
                        retries=retries, backoff=backoff, timeout=timeout)
        items, total, more = _page_items(page, base_url)
        if not items:
            return
        ids = {str(item.get("imageid") or item.get("id")) for item in items}
        if ids <= seen:  # the server ignored the page number: stop rather than loop forever
            log.warning("%s sent page %d again; stopping", base_url, page_number)
            return
        seen |= ids
        yield from items
        if more is False:
            return
        if more is None and total is not None and (page_number + 1) * per_page >= total:
            return
        page_number += 1


def _mars2020_image(item: dict, size: str, base_url: str) -> RawImage | None:
    if str(item.get("sample_type", "")).lower().startswith("thumb"):
        return None
    files = item.get("image_files") or {}
    preference = [size] + [s for s in ("medium", "large", "small", "full_res") if s != size]
    url = next((files[s] for s in preference if isinstance(files.get(s), str) and files[s]), None)
    image_id = item.get("imageid")
    if not url or not image_id:
        return None
    camera = item.get("camera") or {}
    return RawImage(str(image_id), _int_or_none(item.get("sol")),
                    str(camera.get("instrument", "") if isinstance(camera, dict) else ""),
                    str(item.get("date_taken_utc") or item.get("date_taken") or ""), urljoin(base_url, url))


def _msl_image(item: dict, base_url: str) -> RawImage | None:
    if item.get("is_thumbnail") in (True, "true", "True", 1):
        return None
    url = item.get("https_url") or item.get("url")
    image_id = item.get("imageid")
    if not url or not image_id:
        return None
    return RawImage(str(image_id), _int_or_none(item.get("sol")), str(item.get("instrument") or ""),
                    str(item.get("date_taken") or item.get("date_taken_utc") or ""), urljoin(base_url, url))


def iter_mars2020(session: requests.Session, *, sols=(None, None), size: str = "medium",
                  per_page: int = DEFAULT_PER_PAGE, base_url: str = MARS2020_FEED_URL, retries: int = 5,
                  backoff: float = 1.0, timeout: float = 30) -> Iterator[RawImage]:
    """Images of the Mars 2020 raw-image feed, newest sol first, thumbnails left out."""
    params = {"feed": "raw_images", "category": "mars2020", "feedtype": "json", "num": per_page,
              "order": "sol desc", **_sol_conditions(sols)}
    for item in _paged(session, base_url, params, per_page=per_page, page_param="page",
                       retries=retries, backoff=backoff, timeout=timeout):
        image = _mars2020_image(item, size, base_url)
        if image is not None:
            yield image


def iter_msl(session: requests.Session, *, sols=(None, None), per_page: int = DEFAULT_PER_PAGE,
             base_url: str = MSL_FEED_URL, retries: int = 5, backoff: float = 1.0,
             timeout: float = 30) -> Iterator[RawImage]:
    """Images of the MSL raw-image feed, newest sol first, thumbnails left out."""
    params = {"order": "sol desc", "per_page": per_page, "condition_1": "msl:mission", **_sol_conditions(sols)}
    for item in _paged(session, base_url, params, per_page=per_page, page_param="page",
                       retries=retries, backoff=backoff, timeout=timeout):
        image = _msl_image(item, base_url)
        if image is not None:
            yield image


def iter_feed(mission: str, session: requests.Session, *, sols=(None, None), size: str = "medium",
              per_page: int = DEFAULT_PER_PAGE, base_url: str | None = None, retries: int = 5,
              backoff: float = 1.0, timeout: float = 30) -> Iterator[RawImage]:
    """:func:`iter_mars2020` or :func:`iter_msl` by mission name."""
    common = dict(sols=sols, per_page=per_page, retries=retries, backoff=backoff, timeout=timeout)
    if mission == "mars2020":
        return iter_mars2020(session, size=size, base_url=base_url or MARS2020_FEED_URL, **common)
    if mission == "msl":
        return iter_msl(session, base_url=base_url or MSL_FEED_URL, **common)
    raise ValueError(f"unknown mission {mission!r}; choose from {', '.join(MISSIONS)}")


# --------------------------------------------------------------------------------------------
# Download


def _local_name(image: RawImage) -> str:
    suffix = Path(urlsplit(image.url).path).suffix.lower()
    if suffix not in (".jpg", ".jpeg", ".png"):
        suffix = ".jpg"
    stem = _SAFE_NAME.sub("_", image.image_id).strip("._") or "image"
    return stem + suffix


def read_metadata(out_dir: str | os.PathLike) -> pd.DataFrame:
    """``<out_dir>/metadata.csv`` as a table (empty with the right columns if absent)."""
    path = Path(out_dir) / METADATA_NAME
    if not path.exists():
        return pd.DataFrame(columns=METADATA_COLUMNS)
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    return table.reindex(columns=METADATA_COLUMNS, fill_value="")


def _write_metadata(out_dir: Path, existing: pd.DataFrame, new_rows: list[dict]) -> pd.DataFrame:
    merged = pd.concat([existing, pd.DataFrame(new_rows, columns=METADATA_COLUMNS).astype(str)],
                       ignore_index=True)
    merged = merged.drop_duplicates("image_id", keep="last").reset_index(drop=True)
    atomic.write_csv(merged, out_dir / METADATA_NAME)
    return merged


def fetch_raw(mission: str, *, sols: str | tuple[int | None, int | None] | None = None,
              limit: int | None = None, size: str = "medium", out_dir: str | os.PathLike | None = None,
              per_page: int = DEFAULT_PER_PAGE, base_url: str | None = None,
              session: requests.Session | None = None, retries: int = 5, backoff: float = 1.0,
              timeout: float = 30, progress: bool = True) -> FetchResult:
    """Download up to ``limit`` images (newest sol first) of ``mission`` into ``out_dir``.

    ``out_dir`` defaults to ``data/raw/<mission>``. ``size`` (small, medium, large) picks the Mars
    2020 rendition; the MSL feed has one. ``limit`` counts the feed's images in order, whether
    downloaded now or before, so rerunning a command downloads nothing new. An image that answers
    4xx is recorded as failed and skipped; a feed page that answers 4xx, or retries running out,
    stops the run with :class:`FeedError`/:class:`DownloadError` (the metadata written so far is kept).
    """
    if mission not in MISSIONS:
        raise ValueError(f"unknown mission {mission!r}; choose from {', '.join(MISSIONS)}")
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; choose from {', '.join(SIZES)}")
    if limit is not None and limit < 0:
        raise ValueError(f"limit must not be negative, got {limit}")
    sol_range = parse_sols(sols) if sols is None or isinstance(sols, str) else tuple(sols)
    out = Path(out_dir) if out_dir is not None else config.data_paths().raw / mission
    out.mkdir(parents=True, exist_ok=True)
    existing = read_metadata(out)
    known = dict(zip(existing["image_id"], existing["local_path"]))
    result = FetchResult(out)
    new_rows: list[dict] = []
    if limit == 0:
        result.metadata = existing
        return result

    own_session = session is None  # one Session (one connection pool) for every request of the run
    session = session or requests.Session()
    bar = tqdm(total=limit, desc=f"Fetching {mission}", unit="img", disable=not progress)
    try:
        images = iter_feed(mission, session, sols=sol_range, size=size, per_page=per_page,
                           base_url=base_url, retries=retries, backoff=backoff, timeout=timeout)
        for image in itertools.islice(images, limit):  # islice: no page is requested beyond the limit
            result.listed += 1
            bar.update(1)
            name = known.get(image.image_id) or _local_name(image)
            row = {"image_id": image.image_id, "sol": "" if image.sol is None else image.sol,
                   "instrument": image.instrument, "date_taken": image.date_taken, "url": image.url,
                   "local_path": name}
            if (out / name).is_file():
                result.skipped += 1
                if image.image_id not in known:
                    new_rows.append(row)
                continue
            try:
                acquisition.download(image.url, out / name, retries=retries, backoff=backoff, timeout=timeout,
                                     session=session, progress=False)
            except HTTPClientError as error:  # this image is gone or forbidden: note it, go on
                log.warning("skipping %s: %s", image.image_id, error)
                result.failed.append((image.image_id, str(error)))
                continue
            result.downloaded += 1
            new_rows.append(row)
            known[image.image_id] = name
            if len(new_rows) % 50 == 0:  # keep metadata.csv current during long runs
                existing = _write_metadata(out, existing, new_rows)
                new_rows = []
    finally:
        bar.close()
        result.metadata = _write_metadata(out, existing, new_rows)
        if own_session:
            session.close()
    return result
