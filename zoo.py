"""The model zoo: published weights declared with their proof, downloaded, verified, then loaded safely.

Each entry (:class:`ZooEntry`) says what the weights are (domain, architecture, dataset, method,
metrics, license, the recipe that produced them) and how to prove a file is them: its source, its
full ``sha256`` and its ``size`` in bytes. The pattern is torchvision's ``WeightsEnum`` (URL, hash,
metadata), with one deliberate difference: torchvision checks only the 8-hex prefix of the hash
that its file names carry; every zoo download is checked against the full digest before use.

The index
    The entries shipped with equipoise live in ``zoo_index.json`` beside this module. A team adds
    its own with index files of the same form: the environment variable ``EQUIPOISE_ZOO_INDEX``
    (one or more paths separated by ``os.pathsep``) and the ``index=`` argument (a path or a list
    of paths). Files are read in that order, shipped index first, and an entry of a later file
    **overrides an earlier entry of the same name** (``entry_info`` says when it does). An index
    file is JSON::

        {"format": "equipoise.zoo/1", "entries": [{"name": "...", "domain": "vision", ...}, ...]}

    :func:`publish` writes such a file from a trained checkpoint.

Sources
    An ``http(s)://`` URL, or a file on the Hugging Face Hub written ``hf://<owner>/<repo>/<path>``
    (``hf://<owner>/<repo>@<revision>/<path>`` to pin a revision, ``hf://datasets/...`` for a data
    set repository), the spelling of ``huggingface_hub.HfFileSystem``. Hub files go through
    ``huggingface_hub.hf_hub_url`` (honouring ``HF_ENDPOINT``) and then the same downloader, so
    the same checks apply; a Hugging Face token, when one is configured, is sent to the Hub only
    (never forwarded to the storage it redirects to).

Downloads
    :func:`download` streams into ``<cache>/<name>/<file>.part`` with a progress bar, resumes a
    partial file with an HTTP ``Range`` request (starting over when the server ignores it), checks
    size and sha256, and only then renames the file into place: nothing half-written or
    unverified ever sits at the final path, and a file that does not match is deleted. A cached
    file is used without network access and is hashed again on each use (a fraction of a second
    for these sizes; files over 1 GiB are checked by size only on use, having been hashed when
    downloaded). Offline (``offline=True``, ``EQUIPOISE_OFFLINE=1`` or ``HF_HUB_OFFLINE=1``) a
    missing file raises ``FileNotFoundError`` naming where to put it. Two processes downloading
    the same entry into the same cache at the same time are not supported.

The cache is ``$EQUIPOISE_CACHE/zoo``, by default ``~/.cache/equipoise/zoo`` (beside the data
cache of :func:`equipoise.core.paths.cache_dir`).

Example::

    >>> from equipoise import zoo
    >>> [entry.name for entry in zoo.list_entries()]
    ['mobilenet_v2.tv_in1k', 'resnet50.tv_in1k']
    >>> state_dict = zoo.load("mobilenet_v2.tv_in1k")  # downloaded once, verified, weights_only=True
"""

from __future__ import annotations

import dataclasses
import http.client
import importlib.resources
import json
import logging
import math
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch is imported where weights are read, so listing the zoo stays fast
    import torch

__all__ = [
    "INDEX_FORMAT",
    "ZooDownloadError",
    "ZooEntry",
    "download",
    "entry_info",
    "extract_weights",
    "get_entry",
    "list_entries",
    "load",
    "publish",
    "zoo_cache_dir",
]

logger = logging.getLogger(__name__)

INDEX_FORMAT = "equipoise.zoo/1"
DOMAINS = ("vision", "nlp", "detection", "tabular", "federated")
_SHIPPED_INDEX = "zoo_index.json"
_NAME = re.compile(r"[a-z0-9][a-z0-9._-]*\Z")
_SHA256 = re.compile(r"[0-9a-f]{64}\Z")
_REHASH_LIMIT = 1 << 30  # cached files up to 1 GiB are hashed again on each use
_CHUNK = 1 << 16
_TRUE = ("1", "true", "yes", "on")


class ZooDownloadError(OSError):
    """A download that could not finish: unreachable server, HTTP error, timeout or dropped connection.

    ``url`` is the address that failed. A partial file, when there is one, is kept as
    ``<file>.part`` and the next :func:`download` resumes from it.
    """

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"download of {url} failed: {reason}")
        self.url = url


@dataclass(frozen=True)
class ZooEntry:
    """One set of published weights and its proof; validated when built (``ValueError`` naming the field).

    Attributes:
        name: unique name, lower-case letters, digits, ``.``, ``_`` and ``-`` (``resnet50.tv_in1k``).
        domain: one of ``vision``, ``nlp``, ``detection``, ``tabular``, ``federated``.
        architecture, dataset, method: what was trained, on what, with which imbalance method.
        metrics: numbers reported for these weights (``{"acc@1": 76.13}``).
        source: ``http(s)://...`` URL or ``hf://<owner>/<repo>[@<revision>]/<path>``.
        sha256: the full hex digest of the file (64 lower-case hex digits).
        size: the file's size in bytes.
        license: SPDX identifier of the weights' license.
        recipe: the equipoise recipe that produced them, or ``None`` for third-party weights.
        notes: provenance and anything else a reader should know.
    """

    name: str
    domain: str
    architecture: str
    dataset: str
    method: str
    metrics: dict[str, float]
    source: str
    sha256: str
    size: int
    license: str
    recipe: str | None
    notes: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise ValueError(
                f"name must be lower-case letters, digits, '.', '_' or '-' (starting with a letter or digit), "
                f"got {self.name!r}"
            )
        if self.domain not in DOMAINS:
            raise ValueError(f"domain must be one of {list(DOMAINS)}, got {self.domain!r}")
        for field_name in ("architecture", "dataset", "method", "license"):
            value = getattr(self, field_name)
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"{field_name} must be a non-empty string, got {value!r}")
        if not isinstance(self.metrics, dict) or not all(
            isinstance(key, str) and _is_number(value) for key, value in self.metrics.items()
        ):
            raise ValueError(f"metrics must map names to finite numbers, got {self.metrics!r}")
        if not isinstance(self.sha256, str) or not _SHA256.match(self.sha256):
            raise ValueError(f"sha256 must be the full digest, 64 lower-case hex digits, got {self.sha256!r}")
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size <= 0:
            raise ValueError(f"size must be a positive number of bytes, got {self.size!r}")
        if self.recipe is not None and (not isinstance(self.recipe, str) or not self.recipe.strip()):
            raise ValueError(f"recipe must be a non-empty string or null, got {self.recipe!r}")
        if not isinstance(self.notes, str):
            raise ValueError(f"notes must be a string, got {self.notes!r}")
        _parse_source(self.source)

    @property
    def url(self) -> str:
        """The address the file is downloaded from (a Hub source resolved with ``hf_hub_url``)."""
        return _parse_source(self.source)[0]()

    @property
    def file_name(self) -> str:
        """The file's name in the cache: the last part of the source's path."""
        return _parse_source(self.source)[1]

    def to_dict(self) -> dict[str, Any]:
        """The entry as it is written in an index file."""
        return dataclasses.asdict(self)

    def summary(self) -> str:
        """One line: name, what it is, its metrics and its size."""
        metrics = ", ".join(f"{key} {value:g}" for key, value in self.metrics.items()) or "no metrics"
        return (
            f"{self.name}: {self.architecture} on {self.dataset}, {self.method} ({self.domain}); "
            f"{metrics}; {self.size / 2**20:.1f} MiB"
        )


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _parse_source(source: object) -> tuple[Any, str]:
    """``(url_function, file_name)`` of a source; the URL is built on demand (``hf_hub_url`` is imported then)."""
    if not isinstance(source, str):
        raise ValueError(f"source must be a URL string, got {source!r}")
    if source.startswith("hf://"):
        parts = source[len("hf://") :].split("/")
        repo_type = None
        if parts[0] in ("datasets", "spaces"):
            repo_type, parts = parts[0][:-1], parts[1:]
        if len(parts) < 3 or not all(parts):
            raise ValueError(f"source must be hf://<owner>/<repo>[@<revision>]/<path>, got {source!r}")
        repo, at, revision = parts[1].partition("@")
        if not repo or (at and not revision):
            raise ValueError(f"source must be hf://<owner>/<repo>[@<revision>]/<path>, got {source!r}")
        repo_id, filename = f"{parts[0]}/{repo}", "/".join(parts[2:])

        def hub_url() -> str:
            from huggingface_hub import hf_hub_url

            # HF_ENDPOINT is read now, not when huggingface_hub was imported.
            endpoint = os.environ.get("HF_ENDPOINT") or None
            return hf_hub_url(repo_id, filename, repo_type=repo_type, revision=revision or None, endpoint=endpoint)

        return hub_url, parts[-1]
    split = urllib.parse.urlsplit(source)
    file_name = urllib.parse.unquote(split.path.rsplit("/", 1)[-1])
    if split.scheme not in ("http", "https") or not split.netloc or not file_name or file_name in (".", ".."):
        raise ValueError(f"source must be an http(s) URL of a file or hf://<owner>/<repo>/<path>, got {source!r}")
    return (lambda: source), file_name


def _entry_from_dict(raw: object) -> ZooEntry:
    if not isinstance(raw, dict):
        raise ValueError(f"an entry must be a JSON object, got {type(raw).__name__}")
    fields = {field.name for field in dataclasses.fields(ZooEntry)}
    missing = sorted(fields - {"notes"} - raw.keys())
    if missing:
        raise ValueError(f"missing field(s) {', '.join(missing)}")
    unknown = sorted(raw.keys() - fields)
    if unknown:
        raise ValueError(f"unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(fields))}")
    return ZooEntry(**raw)


def _shipped_index() -> Path:
    return Path(str(importlib.resources.files("equipoise").joinpath(_SHIPPED_INDEX)))


def _read_index(path: Path) -> list[ZooEntry]:
    """The validated entries of one index file; every problem is a ``ValueError`` naming the file (and entry)."""
    if not path.is_file():
        raise FileNotFoundError(f"zoo index {str(path)!r} does not exist (check EQUIPOISE_ZOO_INDEX and index=)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"zoo index {str(path)!r} is not valid JSON: {error}") from None
    if not isinstance(data, dict) or data.get("format") != INDEX_FORMAT or not isinstance(data.get("entries"), list):
        raise ValueError(f'zoo index {str(path)!r} must be {{"format": "{INDEX_FORMAT}", "entries": [...]}}')
    unknown = sorted(data.keys() - {"format", "entries"})
    if unknown:
        raise ValueError(f"zoo index {str(path)!r} has unknown key(s) {', '.join(unknown)}")
    entries: list[ZooEntry] = []
    for position, raw in enumerate(data["entries"]):
        named = isinstance(raw, dict) and isinstance(raw.get("name"), str)
        label = f"entry {raw['name']!r}" if named else f"entry #{position}"
        try:
            entry = _entry_from_dict(raw)
        except (TypeError, ValueError) as error:
            raise ValueError(f"zoo index {str(path)!r}, {label}: {error}") from None
        if any(known.name == entry.name for known in entries):
            raise ValueError(f"zoo index {str(path)!r}, {label}: the name appears twice in this file")
        entries.append(entry)
    return entries


def _index_paths(index: str | os.PathLike | Sequence[str | os.PathLike] | None) -> list[Path]:
    paths = [_shipped_index()]
    from_env = os.environ.get("EQUIPOISE_ZOO_INDEX") or ""
    paths += [Path(part).expanduser() for part in from_env.split(os.pathsep) if part]
    if index is None:
        return paths
    given = [index] if isinstance(index, (str, os.PathLike)) else index
    if not isinstance(given, Sequence) or not all(isinstance(part, (str, os.PathLike)) for part in given):
        raise TypeError(f"index must be a path, a list of paths or None, got {index!r}")
    return paths + [Path(part).expanduser() for part in given]


def _catalogue(index) -> dict[str, tuple[ZooEntry, Path, Path | None]]:
    """name -> (entry, the file it comes from, the file of the entry it overrides or None)."""
    known: dict[str, tuple[ZooEntry, Path, Path | None]] = {}
    for path in _index_paths(index):
        for entry in _read_index(path):
            overridden = known[entry.name][1] if entry.name in known else None
            if overridden is not None:
                logger.info("zoo entry %r from %s overrides the one from %s", entry.name, path, overridden)
            known[entry.name] = (entry, path, overridden)
    return known


def _lookup(name: str, index) -> tuple[ZooEntry, Path, Path | None]:
    if not isinstance(name, str):
        raise TypeError(f"name must be a string, got {type(name).__name__}")
    known = _catalogue(index)
    if name not in known:
        raise ValueError(f"unknown zoo entry {name!r}; known: {', '.join(sorted(known)) or 'none'}")
    return known[name]


def list_entries(index: str | os.PathLike | Sequence[str | os.PathLike] | None = None) -> list[ZooEntry]:
    """Every entry of the shipped index, ``$EQUIPOISE_ZOO_INDEX`` and ``index``, by name (later files win)."""
    known = _catalogue(index)
    return [known[name][0] for name in sorted(known)]


def get_entry(name: str, index: str | os.PathLike | Sequence[str | os.PathLike] | None = None) -> ZooEntry:
    """The entry called ``name``; an unknown name raises ``ValueError`` listing the known ones."""
    return _lookup(name, index)[0]


def zoo_cache_dir() -> Path:
    """The zoo's cache folder: ``$EQUIPOISE_CACHE/zoo``, by default ``~/.cache/equipoise/zoo``."""
    from equipoise.core.paths import cache_dir

    return cache_dir().parent / "zoo"


def _cache_path(entry: ZooEntry, cache_dir: str | os.PathLike | None) -> Path:
    if cache_dir is not None and not isinstance(cache_dir, (str, os.PathLike)):
        raise TypeError(f"cache_dir must be a path or None, got {type(cache_dir).__name__}")
    folder = Path(cache_dir).expanduser() if cache_dir is not None else zoo_cache_dir()
    return folder / entry.name / entry.file_name


def entry_info(
    name: str,
    index: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> str:
    """A readable description of entry ``name``: its fields, the index it comes from and its cache state."""
    entry, path, overridden = _lookup(name, index)
    target = _cache_path(entry, cache_dir)
    origin = f"{path} (overrides the entry of {overridden})" if overridden else str(path)
    metrics = ", ".join(f"{key} {value:g}" for key, value in entry.metrics.items()) or "none"
    rows = [
        ("index", origin),
        ("domain", entry.domain),
        ("architecture", entry.architecture),
        ("dataset", entry.dataset),
        ("method", entry.method),
        ("metrics", metrics),
        ("source", entry.source),
        ("sha256", f"{entry.sha256} (full digest, checked before use)"),
        ("size", f"{entry.size:,} bytes ({entry.size / 2**20:.1f} MiB)"),
        ("license", entry.license),
        ("recipe", entry.recipe or "none (third-party weights)"),
    ]
    if entry.source.startswith("hf://"):
        rows.insert(7, ("download URL", entry.url))
    if entry.notes:
        rows.append(("notes", entry.notes))
    rows.append(("cached", f"yes, {target}" if target.is_file() else f"no (downloads to {target})"))
    return "\n".join([entry.name] + [f"  {key:<13} {value}" for key, value in rows])


def _offline(offline: bool | None) -> bool:
    if offline is not None:
        if not isinstance(offline, bool):
            raise TypeError(f"offline must be True, False or None, got {offline!r}")
        return offline
    return any(os.environ.get(name, "").strip().lower() in _TRUE for name in ("EQUIPOISE_OFFLINE", "HF_HUB_OFFLINE"))


def _mismatch(path: Path, entry: ZooEntry, rehash: bool = True) -> str | None:
    """Why the file at ``path`` is not the entry's file, or ``None`` when its size (and hash) match."""
    from equipoise.core.checkpoint import file_sha256

    size = path.stat().st_size
    if size != entry.size:
        return f"size {size} bytes does not match the expected {entry.size} bytes"
    if rehash:
        actual = file_sha256(path)
        if actual != entry.sha256:
            return f"sha256 {actual} does not match the expected {entry.sha256}"
    return None


def _reason(error: BaseException) -> str:
    if isinstance(error, urllib.error.URLError) and not isinstance(error, urllib.error.HTTPError):
        error = error.reason if isinstance(error.reason, BaseException) else error
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


def _request(url: str, start: int, hub: bool) -> urllib.request.Request:
    from equipoise import __version__

    request = urllib.request.Request(url, headers={"User-Agent": f"equipoise/{__version__}"})
    if start:
        request.add_header("Range", f"bytes={start}-")  # forwarded on redirects, as it must be
    if hub:
        from huggingface_hub import get_token

        implicit = os.environ.get("HF_HUB_DISABLE_IMPLICIT_TOKEN", "").strip().lower() not in _TRUE
        token = get_token() if implicit else None
        if token:  # sent to the Hub only: unredirected headers are dropped when it redirects to storage
            request.add_unredirected_header("Authorization", f"Bearer {token}")
    return request


def _transfer(url: str, part: Path, size: int, progress: bool, timeout: float, label: str, hub: bool) -> None:
    """Bring ``part`` to ``size`` bytes from ``url``, resuming it when the server honours ``Range``.

    Raises ``ZooDownloadError`` (the part kept) when the transfer cannot finish, and ``ValueError``
    (the part deleted) when the server's file has another size than the index says.
    """
    from tqdm.auto import tqdm

    for attempt in range(2):
        start = part.stat().st_size if part.is_file() else 0
        if start > size:
            part.unlink()
            start = 0
        if start == size:
            return
        try:
            response = urllib.request.urlopen(_request(url, start, hub), timeout=timeout)
        except urllib.error.HTTPError as error:
            error.close()
            if error.code == 416 and start and attempt == 0:  # the part does not fit the server's file
                logger.warning("%s refused to resume %s (HTTP 416); starting over", url, part)
                part.unlink()
                continue
            raise ZooDownloadError(url, f"the server answered HTTP {error.code} {error.reason}") from None
        except (OSError, http.client.HTTPException) as error:
            raise ZooDownloadError(url, f"no response ({_reason(error)})") from error
        with response:
            if start and response.status != 206:
                logger.info("%s ignored the Range request (HTTP %s); downloading from the start", url, response.status)
                start = 0
            elif start:
                match = re.match(r"bytes (\d+)-\d+/(\d+|\*)", response.headers.get("Content-Range", ""))
                if match is None or int(match.group(1)) != start:
                    if attempt == 0:  # an answer for another range: start over without Range
                        part.unlink()
                        continue
                    raise ZooDownloadError(url, f"the server answered Range with {response.headers['Content-Range']}")
            length = response.headers.get("Content-Length")
            if length is not None and length.isdigit() and start + int(length) != size:
                part.unlink(missing_ok=True)
                raise ValueError(f"{url} serves {start + int(length)} bytes, the zoo index expects {size}: refusing it")
            received = start
            try:
                bar = tqdm(total=size, initial=start, unit="B", unit_scale=True, desc=label, disable=not progress)
                with open(part, "ab" if start else "wb") as file, bar:
                    # read1: at most one system call, so a timeout never discards bytes already received
                    while chunk := response.read1(_CHUNK):
                        received += len(chunk)
                        if received > size:
                            break
                        file.write(chunk)
                        bar.update(len(chunk))
            except (OSError, http.client.HTTPException) as error:
                raise ZooDownloadError(
                    url,
                    f"the transfer stopped after {received} of {size} bytes ({_reason(error)}); {part} is kept "
                    "and the next download resumes from it",
                ) from error
        if received > size:
            part.unlink()
            raise ValueError(f"{url} sent more than the {size} bytes the zoo index expects: refusing it")
        if received < size:
            raise ZooDownloadError(
                url,
                f"the connection closed after {received} of {size} bytes; {part} is kept and the next download "
                "resumes from it",
            )
        return
    raise ZooDownloadError(url, "the server refused to resume and to restart the download")


def download(
    name: str,
    cache_dir: str | os.PathLike | None = None,
    index: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
    progress: bool = True,
    offline: bool | None = None,
    timeout: float = 60.0,
) -> Path:
    """The verified local file of zoo entry ``name``, downloaded into the cache when it is not there.

    Args:
        name: an entry of the index (:func:`list_entries`).
        cache_dir: the cache folder (default :func:`zoo_cache_dir`); the file goes to
            ``<cache_dir>/<name>/<file name>``.
        index: extra index file(s), read after the shipped index and ``$EQUIPOISE_ZOO_INDEX``.
        progress: show a progress bar.
        offline: never use the network; ``None`` reads ``EQUIPOISE_OFFLINE`` and ``HF_HUB_OFFLINE``.
        timeout: seconds to wait for the server to connect or send more bytes.

    A cached file is hashed again before it is returned (size only above 1 GiB); a cached file that
    no longer matches is deleted and downloaded again. A download is written to ``<file>.part``,
    resumed from there with an HTTP Range request when a previous one was cut, checked against the
    entry's size and full sha256, and only then renamed into place.

    Raises:
        ValueError: unknown name, or a downloaded file whose size or sha256 differs from the entry's
            (the file is deleted; the message names expected and actual).
        FileNotFoundError: offline and the file is not in the cache (the message says where it goes).
        ZooDownloadError: an ``OSError`` naming the URL: unreachable server, HTTP error, timeout or a
            connection dropped mid-transfer (the ``.part`` file is kept for the next attempt).
    """
    entry = get_entry(name, index)
    if not isinstance(progress, bool):
        raise TypeError(f"progress must be True or False, got {progress!r}")
    if not _is_number(timeout) or timeout <= 0:
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
    target = _cache_path(entry, cache_dir)
    if target.is_file():
        problem = _mismatch(target, entry, rehash=entry.size <= _REHASH_LIMIT)
        if problem is None:
            return target
        logger.warning("cached zoo file %s: %s; deleting it", target, problem)
        target.unlink()
    if _offline(offline):
        raise FileNotFoundError(
            f"zoo entry {name!r} is not in the cache and downloads are off (offline=True, EQUIPOISE_OFFLINE or "
            f"HF_HUB_OFFLINE): download {entry.source} elsewhere and put it at {target} "
            f"(sha256 {entry.sha256}, {entry.size} bytes)"
        )
    part = target.with_name(target.name + ".part")
    target.parent.mkdir(parents=True, exist_ok=True)
    url = entry.url
    _transfer(url, part, entry.size, progress, timeout, entry.name, hub=entry.source.startswith("hf://"))
    problem = _mismatch(part, entry)
    if problem is not None:
        part.unlink()
        try:
            target.parent.rmdir()  # leave no empty folder behind; kept when it holds anything else
        except OSError:
            pass
        raise ValueError(f"zoo entry {name!r} downloaded from {url}: {problem}; the file was deleted")
    os.replace(part, target)
    return target


def load(
    name: str,
    cache_dir: str | os.PathLike | None = None,
    index: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
    progress: bool = True,
    offline: bool | None = None,
    timeout: float = 60.0,
    map_location: str | torch.device = "cpu",
) -> dict[str, torch.Tensor]:
    """The ``state_dict`` of zoo entry ``name``: :func:`download` (verified), then ``torch.load(weights_only=True)``.

    Raises what :func:`download` raises, and ``ValueError`` when the file is not a dict of tensors.
    """
    from equipoise.core.checkpoint import load_state_dict_file

    path = download(name, cache_dir=cache_dir, index=index, progress=progress, offline=offline, timeout=timeout)
    return load_state_dict_file(path, map_location=map_location)  # download() has just verified the hash


def _read_metrics(path: str | os.PathLike) -> dict[str, float]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"metrics_path {str(path)!r} does not exist")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"metrics_path {str(path)!r} is not valid JSON: {error}") from None
    for section in ("metrics", "scalars"):  # detection evaluations; tabular runs (MetricReport.to_dict())
        if isinstance(data, dict) and isinstance(data.get(section), dict):
            data = data[section]
            break
    if not isinstance(data, dict):
        raise ValueError(f"metrics_path {str(path)!r} must hold a JSON object, got {type(data).__name__}")
    return {key: value for key, value in data.items() if _is_number(value)}


def _write_index(path: Path, entries: list[ZooEntry]) -> None:
    text = json.dumps({"format": INDEX_FORMAT, "entries": [entry.to_dict() for entry in entries]}, indent=2)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        temporary.write_text(text + "\n", encoding="utf-8")
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


#: The keys under which the domains' checkpoints keep their network's weights.
_WEIGHT_KEYS = ("model", "state_dict", "weights")


def extract_weights(checkpoint_path: str | os.PathLike, weights_path: str | os.PathLike) -> Path:
    """Write the network weights of an equipoise checkpoint as a plain ``state_dict`` file, the form
    the zoo serves (:func:`publish`, :func:`load`), and return its path.

    An equipoise checkpoint is a dict with a ``format`` ``"equipoise.<domain>..."`` and the network's
    ``state_dict`` under one of ``"model"`` (vision training, detection ``model.pt``), ``"state_dict"``
    (tabular ``model.pt``) or ``"weights"`` (a federated run's server state); optimiser and sampler
    states are left out. Read with ``torch.load(weights_only=True)``; written atomically.

    Raises:
        FileNotFoundError: no file at ``checkpoint_path``.
        ValueError: a corrupt file, or one that is not an equipoise checkpoint holding weights.
    """
    import torch

    from equipoise.core.checkpoint import save_checkpoint

    checkpoint_path = Path(checkpoint_path).expanduser()
    if not checkpoint_path.is_file():
        raise FileNotFoundError(f"checkpoint_path {str(checkpoint_path)!r} does not exist")
    try:
        raw = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - every way torch can fail on a file that is not a torch checkpoint
        raise ValueError(f"checkpoint_path {str(checkpoint_path)!r} is corrupt or not a torch checkpoint") from None
    if not isinstance(raw, dict) or not str(raw.get("format", "")).startswith("equipoise."):
        found = raw.get("format") if isinstance(raw, dict) else type(raw).__name__
        raise ValueError(
            f"checkpoint_path {str(checkpoint_path)!r} is not an equipoise checkpoint (format {found!r}) "
            "nor a state_dict"
        )
    checkpoint = raw  # read once above, with weights_only=True
    held = [
        key
        for key in _WEIGHT_KEYS
        if isinstance(checkpoint.get(key), dict)
        and checkpoint[key]
        and all(isinstance(value, torch.Tensor) for value in checkpoint[key].values())
    ]
    if not held:
        raise ValueError(
            f"checkpoint_path {str(checkpoint_path)!r} ({checkpoint['format']}) holds no weights under "
            f"{', '.join(_WEIGHT_KEYS)}"
        )
    return save_checkpoint(Path(weights_path).expanduser(), checkpoint[held[0]])


def publish(
    checkpoint_path: str | os.PathLike,
    name: str,
    domain: str,
    architecture: str,
    dataset: str,
    method: str,
    url: str,
    license: str,
    metrics_path: str | os.PathLike | None = None,
    recipe: str | None = None,
    index_path: str | os.PathLike | None = None,
    notes: str = "",
) -> ZooEntry:
    """Declare a trained ``state_dict`` file as a zoo entry in a team's own index file.

    The file is read once with ``weights_only=True`` (it must be a dict of tensors, what
    :func:`load` returns), its sha256 and size are computed, and the entry is added to the index
    at ``index_path``, replacing an entry of the same name; the index is written atomically. Host
    the file at ``url`` (``http(s)://`` or ``hf://<owner>/<repo>/<path>``) and share the index:
    anyone who points ``EQUIPOISE_ZOO_INDEX`` or ``index=`` at it can :func:`download` the file,
    verified.

    Args:
        metrics_path: a run's ``metrics.json``; either a flat object of numbers or the
            ``{"metrics": {...}}`` form, of which the top-level finite numbers are kept.
        recipe: the recipe (name or file) that produced the weights.
        index_path: the index file to create or update; default the first path of
            ``$EQUIPOISE_ZOO_INDEX``, else ``zoo_index.json`` beside the checkpoint. Never the
            shipped index.

    Raises:
        FileNotFoundError: no file at ``checkpoint_path`` or ``metrics_path``.
        ValueError: a field that does not validate, a file that is not a ``state_dict``, the
            shipped index as ``index_path``, or an existing index that does not validate.
    """
    from equipoise.core.checkpoint import file_sha256, load_state_dict_file

    if not isinstance(checkpoint_path, (str, os.PathLike)):
        raise TypeError(f"checkpoint_path must be a path, got {type(checkpoint_path).__name__}")
    checkpoint_path = Path(checkpoint_path).expanduser()
    if not checkpoint_path.is_file():
        raise FileNotFoundError(f"checkpoint_path {str(checkpoint_path)!r} does not exist")
    try:
        load_state_dict_file(checkpoint_path)
    except ValueError as error:
        raise ValueError(
            f"{error}: the zoo serves state_dicts; for an equipoise checkpoint write its weights first with "
            "equipoise.zoo.extract_weights(path, 'weights.pth') (`equipoise zoo publish` does it itself)"
        ) from None
    metrics = _read_metrics(metrics_path) if metrics_path is not None else {}
    entry = ZooEntry(
        name=name,
        domain=domain,
        architecture=architecture,
        dataset=dataset,
        method=method,
        metrics=metrics,
        source=url,
        sha256=file_sha256(checkpoint_path),
        size=checkpoint_path.stat().st_size,
        license=license,
        recipe=recipe,
        notes=notes,
    )
    if index_path is None:
        from_env = [part for part in (os.environ.get("EQUIPOISE_ZOO_INDEX") or "").split(os.pathsep) if part]
        index_path = from_env[0] if from_env else checkpoint_path.parent / "zoo_index.json"
    index_path = Path(index_path).expanduser()
    if index_path.resolve() == _shipped_index().resolve():
        raise ValueError(f"index_path {str(index_path)!r} is the index shipped with equipoise; publish to your own")
    entries = _read_index(index_path) if index_path.exists() else []
    position = next((i for i, known in enumerate(entries) if known.name == entry.name), len(entries))
    entries[position : position + 1] = [entry]
    index_path.parent.mkdir(parents=True, exist_ok=True)
    _write_index(index_path, entries)
    return entry
