"""Fetch release artifacts into a local cache, verified by sha256.

This is one of plex's few network edges (like a backend): everything it downloads is checked
against a digest given up front or listed in a `sha256sum`-style file, and a cached file whose
digest still matches is reused without touching the network, so a no-op bake works offline.

Layout under the cache (default `plex.store.state.cache_root()/downloads`):
    <sha256>/<filename>                   digest known up front
    url-<hash of url>/<filename>          digest looked up in a checksum file ...
    url-<hash of url>/<filename>.sha256   ... and the digest it was verified against
    redirects/<hash of url>-<date>.txt    where a redirect pointed on that day
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import hashlib
import os
import re
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from http.client import HTTPException, HTTPResponse
from pathlib import Path
from typing import cast

from plex import __version__
from plex.errors import DownloadError
from plex.store.state import cache_root

_CHUNK = 1 << 20
_TIMEOUT = 60.0
_USER_AGENT = f"plex/{__version__} (+release artifact fetch)"
_HEX64 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Downloaded:
    path: Path
    sha256: str
    url: str
    note: str = ""  # how the expected digest was found, when that needed saying


def downloads_dir(cache: Path | None = None) -> Path:
    return cache if cache is not None else cache_root() / "downloads"


def fetch(
    url: str,
    *,
    sha256: str | None = None,
    checksum_url: str | None = None,
    checksum_name: str | None = None,
    cache: Path | None = None,
) -> Downloaded:
    """Return a verified local copy of `url`, downloading it only when the cache cannot serve it.

    The expected digest is `sha256`, else the entry for `checksum_name` (default: the URL's file
    name) in the `sha256sum`-style file at `checksum_url`. One of the two is required: plex never
    bakes an unverified download into an image. A copy verified against a checksum file is
    trusted later without re-reading that file (release assets do not change under a tag).
    """
    if sha256 is None and checksum_url is None:
        raise ValueError(f"fetch({url!r}) needs sha256 or checksum_url")
    name = _filename(url)
    root = downloads_dir(cache)
    expected: str | None = None
    stamp: Path | None = None
    if sha256 is not None:
        expected = _normalise_digest(sha256, url)
        target = root / expected / name
    else:
        target = root / f"url-{_short_hash(url)}" / name
        stamp = target.with_name(f"{name}.sha256")

    target.parent.mkdir(parents=True, exist_ok=True)
    with _locked(target):
        recorded = expected or (_read_stamp(stamp) if stamp else None)
        if recorded and target.exists():
            actual = file_sha256(target)
            if actual == recorded:
                return Downloaded(target, actual, url)
            # A corrupt cache entry is re-fetched; if that is impossible the error says both.
            target.unlink()
            if stamp:
                stamp.unlink(missing_ok=True)
            corrupt_note = f" (cached copy {target} was corrupt: {actual})"
        else:
            corrupt_note = ""

        try:
            if expected is None:
                assert checksum_url is not None  # guaranteed by the check at the top
                expected = lookup_checksum(checksum_url, checksum_name or name)
            actual = _download(url, target)
        except DownloadError as e:
            raise DownloadError(f"{e.message}{corrupt_note}", e.hint) from e

        if actual != expected:
            target.unlink(missing_ok=True)
            source = "given" if sha256 is not None else f"from {checksum_url}"
            raise DownloadError(
                f"checksum mismatch for {url}: expected sha256 {expected} ({source}), got {actual}",
                hint="the download or the checksum is wrong; the file was deleted",
            )
        if stamp:
            _write_atomic(stamp, f"{actual}  {name}\n".encode())
        return Downloaded(target, actual, url)


def lookup_checksum(checksum_url: str, name: str) -> str:
    """The digest listed for `name` in the checksum file at `checksum_url` (fetched, not cached:
    it is small and only read when the artifact itself must be downloaded)."""
    text = _get_text(checksum_url)
    return parse_checksums(text, name, source=checksum_url)


def checksum_entries(text: str) -> list[tuple[str, str]]:
    """Every `(sha256, file name)` of a `sha256sum`-style text (`<hex>  <name>`, `<hex> *<name>`
    for binary mode, a bare `<hex>` as name ""). Other lines are skipped, so a PGP-clearsigned
    file (`-----BEGIN PGP SIGNED MESSAGE-----`, `Hash:`, the signature) reads the same."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        first = line.split()[0]
        if _HEX64.fullmatch(first.lower()):
            listed = line[len(first) :].strip().lstrip("*")
            out.append((first.lower(), Path(listed).name if listed else ""))
    return out


def get_text(url: str) -> str:
    """A small text file (a checksum list), fetched every time (never cached)."""
    return _get_text(url)


def location(url: str) -> str | None:
    """Where `url` redirects to, or None when it answers without redirecting (not cached: an
    unversioned link moves to each new snapshot)."""
    try:
        return _location(url)
    except DownloadError as e:
        if "expected a redirect" in e.message:
            return None
        raise


def parse_checksums(text: str, name: str, *, source: str) -> str:
    """Find `name` in `sha256sum` output; a file holding a single bare digest matches any name."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    for line in lines:
        first = line.split()[0]
        digest = first.lower()
        if not _HEX64.fullmatch(digest):
            continue
        listed = line[len(first) :].strip().lstrip("*")  # `sha256sum -b` marks binary with '*'
        if (not listed and len(lines) == 1) or (listed and Path(listed).name == name):
            return digest
    raise DownloadError(
        f"{source} lists no sha256 for {name}",
        hint="check the release version and the asset name",
    )


def redirect_target(
    url: str, *, cache: Path | None = None, day: datetime.date | None = None
) -> str:
    """Where `url` redirects to (its Location), without following it; cached for the day.

    Used to resolve release channels (update.rke2.io answers with a redirect to the tag page),
    which is why the target itself is never fetched.
    """
    day = day or datetime.datetime.now(datetime.UTC).date()
    store = downloads_dir(cache) / "redirects"
    key = _short_hash(url)
    cached = store / f"{key}-{day.isoformat()}.txt"
    if cached.exists():
        return cached.read_text().strip()
    try:
        location = _location(url)
    except DownloadError as e:
        earlier = sorted(store.glob(f"{key}-*.txt")) if store.exists() else []
        if earlier:
            last = earlier[-1]
            e.hint = (
                f"it pointed to {last.read_text().strip()} on "
                f"{last.stem.removeprefix(key + '-')}; pin that to work offline"
            )
        raise
    store.mkdir(parents=True, exist_ok=True)
    _write_atomic(cached, location.encode())
    return location


def file_sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


# --- internals ---------------------------------------------------------------------------------


def _filename(url: str) -> str:
    name = urllib.parse.unquote(Path(urllib.parse.urlsplit(url).path).name)
    if not name or name in {".", ".."}:
        raise ValueError(f"{url!r} does not end in a file name")
    return name


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _normalise_digest(digest: str, url: str) -> str:
    d = digest.strip().lower().removeprefix("sha256:")
    if not _HEX64.fullmatch(d):
        raise DownloadError(f"'{digest}' is not a sha256 digest (for {url})")
    return d


def _read_stamp(stamp: Path) -> str | None:
    try:
        digest = stamp.read_text().split()[0]
    except (OSError, IndexError):
        return None
    return digest if _HEX64.fullmatch(digest) else None


@contextlib.contextmanager
def _locked(target: Path) -> Iterator[None]:
    """Serialise fetches of one file across threads and processes (flock is per open file
    description, so two threads opening the lock file separately exclude each other too)."""
    lock = target.with_name(f".{target.name}.lock")
    with lock.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _open(url: str) -> HTTPResponse:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "file":
        # A local release directory (an air-gapped host's copy): read, verified the same way.
        path = Path(urllib.parse.unquote(parts.path))
        try:
            return cast(HTTPResponse, path.open("rb"))
        except OSError as e:
            raise DownloadError(
                f"{path}: {e.strerror or e}", hint="the local release directory lacks this file"
            ) from e
    if parts.scheme not in {"http", "https"}:
        raise DownloadError(f"{url}: only http(s) and file URLs can be fetched")
    req = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})  # noqa: S310
    try:
        # http(s) only (checked above), so urlopen returns an HTTPResponse.
        return cast(HTTPResponse, urllib.request.urlopen(req, timeout=_TIMEOUT))  # noqa: S310
    except urllib.error.HTTPError as e:
        raise DownloadError(f"{url}: HTTP {e.code} {e.reason}") from e
    except urllib.error.URLError as e:
        raise DownloadError(
            f"cannot reach {url}: {e.reason}", hint="check the network or use a mirror URL"
        ) from e
    except (OSError, HTTPException) as e:
        raise DownloadError(f"cannot reach {url}: {e}") from e


def _get_text(url: str) -> str:
    with _open(url) as resp:
        try:
            data: bytes = resp.read()
        except (OSError, HTTPException) as e:
            raise DownloadError(f"{url}: download interrupted: {e}") from e
    return data.decode("utf-8", errors="replace")


def _download(url: str, target: Path) -> str:
    """Stream `url` into a temporary file beside `target`, then rename it into place."""
    digest = hashlib.sha256()
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, _open(url) as resp:
            try:
                while chunk := resp.read(_CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
            except (OSError, HTTPException) as e:
                raise DownloadError(f"{url}: download interrupted: {e}") from e
        Path(tmp).replace(target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return digest.hexdigest()


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


def _location(url: str) -> str:
    opener = urllib.request.build_opener(_NoRedirect)
    req = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})  # noqa: S310
    try:
        with opener.open(req, timeout=_TIMEOUT) as resp:
            status = resp.status
    except urllib.error.HTTPError as e:
        # Without a redirect handler urllib reports 3xx as an HTTPError carrying the headers.
        if 300 <= e.code < 400 and (loc := e.headers.get("Location")):
            return urllib.parse.urljoin(url, loc)
        raise DownloadError(f"{url}: HTTP {e.code} {e.reason}") from e
    except urllib.error.URLError as e:
        raise DownloadError(f"cannot reach {url}: {e.reason}") from e
    except (OSError, HTTPException) as e:
        raise DownloadError(f"cannot reach {url}: {e}") from e
    raise DownloadError(f"{url}: expected a redirect, got HTTP {status}")
