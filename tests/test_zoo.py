"""equipoise.zoo against a real HTTP server on 127.0.0.1: resume, refusal of bad files, offline use, publish."""

import hashlib
import http.server
import importlib.util
import io
import json
import os
import re
import threading
from pathlib import Path

import pytest
import torch

from equipoise import zoo

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("EQUIPOISE_DATA") or ROOT.parent / "shared" / "data")
MOBILENET = DATA / "weights" / "mobilenet_v2-b0353104.pth"


class _State:
    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.modes: dict[str, str] = {}
        self.redirects: dict[str, str] = {}
        self.requests: list[dict] = []
        self.release = threading.Event()


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves ``state.files`` with Range support; ``state.modes[path]`` makes it misbehave on purpose."""

    def do_GET(self) -> None:
        state = self.server.state
        record = {"path": self.path, "range": self.headers.get("Range"), "auth": self.headers.get("Authorization")}
        state.requests.append(record)
        mode = state.modes.get(self.path, "good")
        if mode == "drop":  # close without a word
            self.close_connection = True
            return
        if self.path in state.redirects:
            record["status"] = 302
            self.send_response(302)
            self.send_header("Location", state.redirects[self.path])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = state.files.get(self.path)
        if body is None:
            record["status"] = 404
            self.send_error(404)
            return
        start = 0
        if record["range"] and mode != "ignore_range":
            start = int(re.fullmatch(r"bytes=(\d+)-", record["range"]).group(1))
            if start >= len(body):
                record["status"] = 416
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        record["status"] = 206 if start else 200
        payload = body[start:]
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        if mode in ("truncate", "stall"):  # half the promised bytes, then (after a stall) a closed connection
            payload = payload[: len(payload) // 2]
            record["sent"] = len(payload)  # recorded first: the client may be done before this thread goes on
            self.wfile.write(payload)
            self.wfile.flush()
            if mode == "stall":
                state.release.wait(10)
            self.close_connection = True
        else:
            record["sent"] = len(payload)
            self.wfile.write(payload)

    def log_message(self, format, *args) -> None:
        pass


@pytest.fixture(scope="module")
def _http_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    server.state = _State()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.state.release.set()
    server.shutdown()
    server.server_close()


@pytest.fixture
def server(_http_server):
    state = _State()
    _http_server.state = state
    state.base = f"http://127.0.0.1:{_http_server.server_address[1]}"
    yield state
    state.release.set()


@pytest.fixture(autouse=True)
def _environment(monkeypatch, tmp_path):
    for name in ("EQUIPOISE_ZOO_INDEX", "EQUIPOISE_OFFLINE", "HF_HUB_OFFLINE", "HF_TOKEN", "HF_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HUB_DISABLE_IMPLICIT_TOKEN", "1")  # no token of the machine's user is sent
    monkeypatch.setenv("EQUIPOISE_CACHE", str(tmp_path / "equipoise-cache"))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


def _weights(seed: int = 0) -> tuple[dict[str, torch.Tensor], bytes]:
    generator = torch.Generator().manual_seed(seed)
    state = {"layer.weight": torch.randn(200, 300, generator=generator), "layer.bias": torch.randn(200)}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return state, buffer.getvalue()


def _entry(name: str, data: bytes, source: str, **changes) -> dict:
    entry = {
        "name": name,
        "domain": "vision",
        "architecture": "linear",
        "dataset": "toy",
        "method": "cross-entropy",
        "metrics": {"accuracy": 0.5},
        "source": source,
        "sha256": hashlib.sha256(data).hexdigest(),
        "size": len(data),
        "license": "MIT",
        "recipe": None,
    }
    entry.update(changes)
    return entry


def _write_index(path: Path, *entries: dict) -> Path:
    path.write_text(json.dumps({"format": zoo.INDEX_FORMAT, "entries": list(entries)}))
    return path


def _serve(server, tmp_path, name="toy", path="/weights/toy.pth", served=None, **changes):
    """Serve ``served`` (default: the real bytes) at ``path``; return (index file, real bytes, state_dict)."""
    state, data = _weights()
    server.files[path] = data if served is None else served
    index = _write_index(tmp_path / f"{name}-index.json", _entry(name, data, server.base + path, **changes))
    return index, data, state


def _cache_files(cache: Path) -> list[Path]:
    return sorted(path for path in cache.rglob("*") if path.is_file()) if cache.exists() else []


def test_shipped_index_loads_and_declares_torchvision_files():
    entries = {entry.name: entry for entry in zoo.list_entries()}
    assert {"mobilenet_v2.tv_in1k", "resnet50.tv_in1k"} <= entries.keys()
    for entry in entries.values():
        # torchvision names its files after the digest's first hex digits: the full sha256 must extend them
        prefix = re.search(r"-([0-9a-f]{8,})\.pth$", entry.file_name).group(1)
        assert entry.sha256.startswith(prefix) and len(entry.sha256) == 64
        assert entry.license == "BSD-3-Clause" and entry.recipe is None


def test_shipped_mobilenet_entry_matches_the_real_file():
    if not MOBILENET.is_file():
        pytest.skip(f"torchvision's MobileNetV2 weights not found at {MOBILENET} (set EQUIPOISE_DATA)")
    entry = zoo.get_entry("mobilenet_v2.tv_in1k")
    data = MOBILENET.read_bytes()
    assert entry.sha256 == hashlib.sha256(data).hexdigest()
    assert entry.size == len(data) == MOBILENET.stat().st_size


def test_shipped_mobilenet_downloads_verified_from_a_mirror_and_loads(server, tmp_path):
    """A user index overrides the shipped entry's source only; the shipped digest still has to match."""
    if not MOBILENET.is_file():
        pytest.skip(f"torchvision's MobileNetV2 weights not found at {MOBILENET} (set EQUIPOISE_DATA)")
    shipped = zoo.get_entry("mobilenet_v2.tv_in1k").to_dict()
    server.files["/mirror/mobilenet_v2-b0353104.pth"] = MOBILENET.read_bytes()
    source = server.base + "/mirror/mobilenet_v2-b0353104.pth"
    mirror = _write_index(tmp_path / "mirror.json", dict(shipped, source=source))
    assert "overrides the entry of" in zoo.entry_info("mobilenet_v2.tv_in1k", index=mirror)
    state = zoo.load("mobilenet_v2.tv_in1k", index=mirror, progress=False)
    expected = torch.load(MOBILENET, weights_only=True)
    assert state.keys() == expected.keys() and all(torch.equal(state[key], expected[key]) for key in expected)
    assert zoo.download("mobilenet_v2.tv_in1k", index=mirror).parent == zoo.zoo_cache_dir() / "mobilenet_v2.tv_in1k"


def test_download_good_file_then_cached_without_network(server, tmp_path):
    index, data, _ = _serve(server, tmp_path)
    cache = tmp_path / "cache"
    path = zoo.download("toy", cache_dir=cache, index=index, progress=False)
    assert path == cache / "toy" / "toy.pth" and path.read_bytes() == data
    assert _cache_files(cache) == [path]  # no .part left
    server.files.clear()  # a second call must not need the server
    assert zoo.download("toy", cache_dir=cache, index=index, progress=False) == path
    assert len(server.requests) == 1


def test_corrupted_file_is_refused_and_deleted(server, tmp_path):
    _, data = _weights()
    corrupted = bytearray(data)
    corrupted[len(data) // 2] ^= 0xFF
    index, data, _ = _serve(server, tmp_path, served=bytes(corrupted))
    cache = tmp_path / "cache"
    with pytest.raises(ValueError) as error:
        zoo.download("toy", cache_dir=cache, index=index, progress=False)
    message = str(error.value)
    assert hashlib.sha256(data).hexdigest() in message and hashlib.sha256(corrupted).hexdigest() in message
    assert _cache_files(cache) == []


def test_truncated_transfer_keeps_part_then_resumes_with_range(server, tmp_path):
    index, data, _ = _serve(server, tmp_path)
    server.modes["/weights/toy.pth"] = "truncate"
    cache = tmp_path / "cache"
    with pytest.raises(zoo.ZooDownloadError) as error:
        zoo.download("toy", cache_dir=cache, index=index, progress=False)
    assert isinstance(error.value, OSError) and error.value.url == server.base + "/weights/toy.pth"
    assert error.value.url in str(error.value)
    half = len(data) // 2
    part = cache / "toy" / "toy.pth.part"
    assert _cache_files(cache) == [part] and part.read_bytes() == data[:half]

    server.modes.clear()
    path = zoo.download("toy", cache_dir=cache, index=index, progress=False)
    assert path.read_bytes() == data and _cache_files(cache) == [path]
    resumed = server.requests[-1]
    assert resumed["range"] == f"bytes={half}-" and resumed["status"] == 206 and resumed["sent"] == len(data) - half


def test_stalled_transfer_times_out_keeps_part_and_resumes(server, tmp_path):
    index, data, _ = _serve(server, tmp_path)
    server.modes["/weights/toy.pth"] = "stall"
    cache = tmp_path / "cache"
    with pytest.raises(zoo.ZooDownloadError) as error:
        zoo.download("toy", cache_dir=cache, index=index, progress=False, timeout=1.0)
    assert server.base + "/weights/toy.pth" in str(error.value)
    server.release.set()
    kept = (cache / "toy" / "toy.pth.part").read_bytes()
    assert 0 < len(kept) <= len(data) // 2 and data.startswith(kept)  # what arrived, nothing else
    server.modes.clear()
    assert zoo.download("toy", cache_dir=cache, index=index, progress=False).read_bytes() == data
    assert server.requests[-1]["range"] == f"bytes={len(kept)}-"


def test_connection_dropped_without_response(server, tmp_path):
    index, _, _ = _serve(server, tmp_path)
    server.modes["/weights/toy.pth"] = "drop"
    cache = tmp_path / "cache"
    with pytest.raises(zoo.ZooDownloadError) as error:
        zoo.download("toy", cache_dir=cache, index=index, progress=False)
    assert server.base + "/weights/toy.pth" in str(error.value)
    assert _cache_files(cache) == []


def test_http_404_names_the_url(server, tmp_path):
    index, _, _ = _serve(server, tmp_path)
    server.files.clear()
    cache = tmp_path / "cache"
    with pytest.raises(zoo.ZooDownloadError, match="404") as error:
        zoo.download("toy", cache_dir=cache, index=index, progress=False)
    assert server.base + "/weights/toy.pth" in str(error.value)
    assert _cache_files(cache) == []


def test_server_ignoring_range_restarts_from_zero(server, tmp_path):
    index, data, _ = _serve(server, tmp_path)
    server.modes["/weights/toy.pth"] = "ignore_range"
    part = tmp_path / "cache" / "toy" / "toy.pth.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"\0" * (len(data) // 3))  # appending the full file to this would fail the hash
    path = zoo.download("toy", cache_dir=tmp_path / "cache", index=index, progress=False)
    assert path.read_bytes() == data and not part.exists()
    assert server.requests[-1]["range"] == f"bytes={len(data) // 3}-" and server.requests[-1]["status"] == 200


def test_416_starts_over_and_a_smaller_file_is_refused(server, tmp_path):
    _, data = _weights()
    index, data, _ = _serve(server, tmp_path, served=data[:1000])  # the server holds another, smaller file
    part = tmp_path / "cache" / "toy" / "toy.pth.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(data[:5000])
    with pytest.raises(ValueError, match=f"serves 1000 bytes, the zoo index expects {len(data)}"):
        zoo.download("toy", cache_dir=tmp_path / "cache", index=index, progress=False)
    assert [(r["range"], r["status"]) for r in server.requests] == [("bytes=5000-", 416), (None, 200)]
    assert not part.exists()


@pytest.mark.parametrize("how", ["argument", "EQUIPOISE_OFFLINE", "HF_HUB_OFFLINE"])
def test_offline_uses_a_cached_verified_file(server, tmp_path, monkeypatch, how):
    index, data, _ = _serve(server, tmp_path)
    cache = tmp_path / "cache"
    path = zoo.download("toy", cache_dir=cache, index=index, progress=False)
    # the same entry now points at a port nothing listens on: only the cache can answer
    entry = _entry("toy", data, "http://127.0.0.1:9/weights/toy.pth")
    unreachable = _write_index(tmp_path / "unreachable.json", entry)
    if how != "argument":
        monkeypatch.setenv(how, "1")
    offline = True if how == "argument" else None
    assert zoo.download("toy", cache_dir=cache, index=unreachable, offline=offline) == path
    state = zoo.load("toy", cache_dir=cache, index=unreachable, offline=offline)
    assert torch.equal(state["layer.weight"], _weights()[0]["layer.weight"])


def test_offline_without_cached_file_says_where_to_put_it(server, tmp_path, monkeypatch):
    index, _, _ = _serve(server, tmp_path)
    monkeypatch.setenv("EQUIPOISE_OFFLINE", "1")
    cache = tmp_path / "cache"
    with pytest.raises(FileNotFoundError, match=re.escape(str(cache / "toy" / "toy.pth"))):
        zoo.download("toy", cache_dir=cache, index=index)
    assert server.requests == [] and _cache_files(cache) == []


def test_cached_file_that_no_longer_matches_is_replaced(server, tmp_path):
    index, data, _ = _serve(server, tmp_path)
    cache = tmp_path / "cache"
    path = zoo.download("toy", cache_dir=cache, index=index, progress=False)
    path.write_bytes(b"x" * len(data))  # same size, other bytes: only the hash tells
    with pytest.raises(FileNotFoundError):
        zoo.download("toy", cache_dir=cache, index=index, offline=True)
    assert not path.exists()
    assert zoo.download("toy", cache_dir=cache, index=index, progress=False).read_bytes() == data
    assert len(server.requests) == 2


def test_hub_source_uses_hf_hub_url_and_keeps_the_token_from_storage(server, tmp_path, monkeypatch):
    _, data = _weights()
    hub_path = "/team/models/resolve/v1/runs/toy.pth"
    server.redirects[hub_path] = "/storage/blob-1234"
    server.files["/storage/blob-1234"] = data
    index = _write_index(tmp_path / "hub.json", _entry("hub-toy", data, "hf://team/models@v1/runs/toy.pth"))
    monkeypatch.setenv("HF_ENDPOINT", server.base)
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")
    monkeypatch.delenv("HF_HUB_DISABLE_IMPLICIT_TOKEN")
    assert zoo.get_entry("hub-toy", index=index).url == server.base + hub_path
    path = zoo.download("hub-toy", cache_dir=tmp_path / "cache", index=index, progress=False)
    assert path.name == "toy.pth" and path.read_bytes() == data
    hub, storage = server.requests
    assert hub["auth"] == "Bearer hf_not_a_real_token" and storage["auth"] is None
    # a corrupted blob is refused on the Hub path too
    path.unlink()
    server.files["/storage/blob-1234"] = data[::-1]
    with pytest.raises(ValueError, match="does not match"):
        zoo.download("hub-toy", cache_dir=tmp_path / "cache", index=index, progress=False)


def test_user_indexes_override_shipped_and_each_other(tmp_path, monkeypatch):
    _, data = _weights()
    first = _write_index(
        tmp_path / "first.json",
        _entry("a", data, "https://example.org/a.pth"),
        _entry("b", data, "https://example.org/b.pth", method="focal"),
        _entry("resnet50.tv_in1k", data, "https://example.org/r.pth", method="ldam-drw"),
    )
    second = _write_index(tmp_path / "second.json", _entry("b", data, "https://example.org/b.pth", method="ldam"))
    monkeypatch.setenv("EQUIPOISE_ZOO_INDEX", os.pathsep.join([str(first), str(second)]))
    names = [entry.name for entry in zoo.list_entries()]
    assert names == sorted(names) and {"a", "b", "mobilenet_v2.tv_in1k", "resnet50.tv_in1k"} <= set(names)
    assert zoo.get_entry("b").method == "ldam"
    assert zoo.get_entry("resnet50.tv_in1k").method == "ldam-drw"
    assert f"overrides the entry of {zoo._shipped_index()}" in zoo.entry_info("resnet50.tv_in1k")
    third = _write_index(tmp_path / "third.json", _entry("b", data, "https://example.org/b.pth", method="cb"))
    assert zoo.get_entry("b", index=third).method == "cb"  # index= comes last
    with pytest.raises(ValueError, match=r"unknown zoo entry 'c'; known: .*mobilenet_v2.tv_in1k"):
        zoo.get_entry("c")
    monkeypatch.setenv("EQUIPOISE_ZOO_INDEX", str(tmp_path / "missing.json"))
    with pytest.raises(FileNotFoundError, match="missing.json"):
        zoo.list_entries()


@pytest.mark.parametrize(
    "change, words",
    [
        ({"sha256": None}, "missing field"),
        ({"sha256": "0676ba61"}, "64 lower-case hex"),
        ({"size": -3}, "size must be"),
        ({"size": True}, "size must be"),
        ({"domain": "audio"}, "domain must be one of"),
        ({"source": "ftp://example.org/w.pth"}, "source must be"),
        ({"source": "hf://team/w.pth"}, "source must be"),
        ({"metrics": {"accuracy": "high"}}, "metrics must"),
        ({"recipe": ""}, "recipe must"),
        ({"sha265": "x"}, "unknown field"),
    ],
)
def test_invalid_entries_name_the_file_and_entry(tmp_path, change, words):
    _, data = _weights()
    entry = _entry("broken", data, "https://example.org/w.pth")
    entry.update(change)
    entry = {key: value for key, value in entry.items() if value is not None or key == "recipe"}
    path = _write_index(tmp_path / "bad.json", entry)
    with pytest.raises(ValueError, match=re.escape(str(path))) as error:
        zoo.list_entries(index=path)
    assert "'broken'" in str(error.value) and words in str(error.value)


def test_invalid_index_files(tmp_path):
    _, data = _weights()
    twice = _write_index(tmp_path / "twice.json", *[_entry("dup", data, "https://example.org/w.pth")] * 2)
    with pytest.raises(ValueError, match="'dup': the name appears twice"):
        zoo.list_entries(index=twice)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="bad.json' is not valid JSON"):
        zoo.list_entries(index=tmp_path / "bad.json")
    (tmp_path / "format.json").write_text(json.dumps({"entries": []}))
    with pytest.raises(ValueError, match="format"):
        zoo.list_entries(index=tmp_path / "format.json")
    with pytest.raises(TypeError, match="index must be"):
        zoo.list_entries(index=3)


def test_publish_round_trip_through_the_server(server, tmp_path):
    state, _ = _weights(seed=7)
    checkpoint = tmp_path / "run" / "weights.pth"
    checkpoint.parent.mkdir()
    torch.save(state, checkpoint)
    metrics = tmp_path / "run" / "metrics.json"
    metrics.write_text(
        json.dumps({"metrics": {"accuracy": 0.9, "balanced_accuracy": 0.75, "epochs": 3, "per_class": [1, 2]}})
    )
    index = tmp_path / "team" / "zoo.json"
    url = server.base + "/team/weights.pth"
    entry = zoo.publish(
        checkpoint, "team.cifar10_lt", "vision", "resnet32", "CIFAR-10-LT", "ldam-drw", url, "CC-BY-4.0",
        metrics_path=metrics, recipe="cifar10_lt_ldam_drw", index_path=index,
    )  # fmt: skip
    assert entry.sha256 == hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    assert entry.size == checkpoint.stat().st_size
    assert entry.metrics == {"accuracy": 0.9, "balanced_accuracy": 0.75, "epochs": 3}
    assert zoo.get_entry("team.cifar10_lt", index=index) == entry

    server.files["/team/weights.pth"] = checkpoint.read_bytes()
    loaded = zoo.load("team.cifar10_lt", cache_dir=tmp_path / "cache", index=index, progress=False)
    assert loaded.keys() == state.keys() and all(torch.equal(loaded[key], state[key]) for key in state)

    # publishing again replaces the entry; another name is added; a flat metrics file works too
    metrics.write_text(json.dumps({"accuracy": 0.95, "note": "flat", "flag": True}))
    again = zoo.publish(
        checkpoint, "team.cifar10_lt", "vision", "resnet32", "CIFAR-10-LT", "ldam-drw", url, "CC-BY-4.0",
        metrics_path=metrics, index_path=index,
    )  # fmt: skip
    assert again.metrics == {"accuracy": 0.95}
    zoo.publish(checkpoint, "team.other", "vision", "resnet32", "CIFAR-10-LT", "ce", url, "MIT", index_path=index)
    written = json.loads(index.read_text())
    assert [item["name"] for item in written["entries"]] == ["team.cifar10_lt", "team.other"]
    assert written["entries"][0] == again.to_dict()


def test_publish_refuses_bad_inputs(tmp_path):
    checkpoint = tmp_path / "model.pt"
    torch.save({"format": "equipoise.vision/1", "model": {"w": torch.zeros(2)}, "epoch": 3}, checkpoint)
    arguments = ("team.x", "vision", "resnet32", "CIFAR-10-LT", "ce", "https://example.org/w.pth", "MIT")
    with pytest.raises(ValueError, match="state_dict"):
        zoo.publish(checkpoint, *arguments, index_path=tmp_path / "zoo.json")
    torch.save({"w": torch.zeros(2)}, checkpoint)
    with pytest.raises(ValueError, match="shipped with equipoise"):
        zoo.publish(checkpoint, *arguments, index_path=zoo._shipped_index())
    with pytest.raises(ValueError, match="sha256|domain"):
        zoo.publish(checkpoint, "team.x", "audio", *arguments[2:], index_path=tmp_path / "zoo.json")
    with pytest.raises(FileNotFoundError, match="checkpoint_path"):
        zoo.publish(tmp_path / "missing.pt", *arguments)
    entry = zoo.publish(checkpoint, *arguments)  # default index: beside the checkpoint
    assert zoo.get_entry("team.x", index=tmp_path / "zoo_index.json") == entry


def test_download_zoo_script(server, tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("download_zoo", ROOT / "tools" / "download_zoo.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    index, data, _ = _serve(server, tmp_path)
    assert script.main(["list", "--index", str(index)]) == 0
    assert "toy: linear on toy, cross-entropy" in capsys.readouterr().out
    cache = tmp_path / "cache"
    assert script.main(["download", "toy", "--index", str(index), "--cache-dir", str(cache), "--no-progress"]) == 0
    assert Path(capsys.readouterr().out.strip()).read_bytes() == data
    assert script.main(["info", "toy", "--index", str(index), "--cache-dir", str(cache)]) == 0
    assert f"yes, {cache / 'toy' / 'toy.pth'}" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_:
        script.main(["info", "nope"])
    assert exit_.value.code == 1 and "unknown zoo entry 'nope'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        script.main(["--help"])
    assert exit_.value.code == 0 and "Examples:" in capsys.readouterr().out
