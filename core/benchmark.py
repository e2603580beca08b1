"""Timing helpers and the loss benchmark behind ``tools/benchmarks/losses.py``.

Times are medians of repeated forward+backward passes in one process, measured in rounds
that interleave the candidates (so slow drifts of the machine affect all alike), reported as
ratios to a baseline run on the same tensors.
"""

from __future__ import annotations

import inspect
import statistics
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from equipoise.core.losses import LOSSES
from equipoise.core.testing import example_class_counts

__all__ = [
    "LossTiming",
    "SOFTMAX_FAMILY",
    "benchmark_losses",
    "keep_freed_memory",
    "process_tree",
    "run_measured",
    "single_thread_worker",
    "time_interleaved",
]

#: Losses whose cost is dominated by one softmax over the classes, held to 1.5x cross-entropy.
SOFTMAX_FAMILY = (
    "cross_entropy",
    "focal",
    "ldam",
    "balanced_softmax",
    "logit_adjusted",
    "vs",
    "dice",
    "dual_focal",
    "squentropy",
)


@dataclass
class LossTiming:
    name: str
    baseline: str
    milliseconds: float
    baseline_milliseconds: float
    target: float | None

    @property
    def ratio(self) -> float:
        return self.milliseconds / self.baseline_milliseconds

    @property
    def meets_target(self) -> bool | None:
        return None if self.target is None else self.ratio <= self.target


def keep_freed_memory(disable_mmap: bool = False) -> bool:
    """Ask glibc to keep freed buffers instead of returning them to the kernel.

    By default glibc unmaps each freed buffer above its mmap threshold, so every iteration of
    a benchmark on ``(8192, 1000)`` tensors page-faults its buffers back in and times the
    kernel's page zeroing more than the code under test. Caching allocators (jemalloc,
    tcmalloc, PyTorch's CUDA allocator) avoid that; this does the same for the benchmark
    process only. By default the mmap threshold is raised to glibc's maximum, 32 MiB, which
    covers the loss benchmark's tensors; ``disable_mmap=True`` serves every buffer from the
    heap instead, for buffers above 32 MiB (the sampler benchmark's 80 MB index arrays) -- it
    fragments the heap under the loss benchmark's mix of sizes, so it is not the default.
    Returns whether glibc accepted the settings (False elsewhere).
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold, m_mmap_max = -1, -3, -4
    if disable_mmap:
        return bool(mallopt(m_mmap_max, 0)) and bool(mallopt(m_trim_threshold, 2**32))
    return bool(mallopt(m_mmap_threshold, 32 * 1024 * 1024)) and bool(mallopt(m_trim_threshold, 2**30))


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_interleaved(
    candidates: Mapping[str, Callable[[], None]], device: torch.device, repeats: int = 20, warmup: int = 3
) -> dict[str, float]:
    """Median seconds of each zero-argument callable, timed in interleaved rounds."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    for _ in range(warmup):
        for run in candidates.values():
            run()
    samples: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, run in candidates.items():
            _synchronize(device)
            start = time.perf_counter()
            run()
            _synchronize(device)
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in samples.items()}


def _forward_backward(
    loss_fn: Callable[..., torch.Tensor], logits: torch.Tensor, target: torch.Tensor
) -> Callable[[], None]:
    def run() -> None:
        logits.grad = None
        loss_fn(logits, target).backward()

    return run


def benchmark_losses(
    device: torch.device,
    batch_size: int = 8192,
    num_classes: int = 1000,
    dense_shape: tuple[int, int] = (65536, 80),
    repeats: int = 20,
    softmax_target: float = 1.5,
    seed: int = 0,
) -> list[LossTiming]:
    """Forward+backward time of every registered loss relative to its baseline.

    Index-target losses run on ``(batch_size, num_classes)`` fp32 logits against
    ``F.cross_entropy``; multi-label losses against ``F.binary_cross_entropy_with_logits`` on
    the same shape; ``sigmoid_focal`` against ``torchvision.ops.sigmoid_focal_loss`` on
    ``dense_shape`` (RetinaNet-sized: anchors x COCO classes). Every loss is built by name
    through the registry with its defaults and long-tailed class counts.
    """
    import torchvision

    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch_size, num_classes, generator=generator).to(device).requires_grad_()
    target = torch.randint(num_classes, (batch_size,), generator=generator).to(device)
    multi_label = (torch.rand(batch_size, num_classes, generator=generator) < 0.01).float().to(device)
    dense = torch.randn(*dense_shape, generator=generator).to(device).requires_grad_()
    dense_target = (torch.rand(*dense_shape, generator=generator) < 0.01).float().to(device)
    counts = example_class_counts(num_classes)

    results: list[LossTiming] = []
    index_candidates = {"cross_entropy (F)": _forward_backward(F.cross_entropy, logits, target)}
    binary_candidates = {
        "bce_with_logits (F)": _forward_backward(
            lambda x, t: F.binary_cross_entropy_with_logits(x, t, reduction="sum") / x.shape[0], logits, multi_label
        )
    }
    for name in LOSSES.names():
        cls = LOSSES.get(name)
        parameters = inspect.signature(cls).parameters
        kwargs = {"class_counts": counts} if "class_counts" in parameters else {}
        module = cls(**kwargs).to(device)
        if name == "sigmoid_focal":
            continue
        if cls.target_kind == "index":
            index_candidates[name] = _forward_backward(module, logits, target)
        else:
            binary_candidates[name] = _forward_backward(module, logits, multi_label)

    for baseline, candidates in (("cross_entropy (F)", index_candidates), ("bce_with_logits (F)", binary_candidates)):
        times = time_interleaved(candidates, device, repeats)
        for name, seconds in times.items():
            if name == baseline:
                continue
            target_ratio = softmax_target if name in SOFTMAX_FAMILY else None
            results.append(LossTiming(name, baseline, 1e3 * seconds, 1e3 * times[baseline], target_ratio))

    # LDAM is meant for cosine logits in [-1, 1] (NormedLinear); N(0, 1) logits times its
    # scale 30 underflow to denormals. Time it on the input it is designed for as well.
    cosine = (2 * torch.rand(batch_size, num_classes, generator=generator) - 1).to(device).requires_grad_()
    cosine_times = time_interleaved(
        {
            "cross_entropy": _forward_backward(F.cross_entropy, cosine, target),
            "ldam": _forward_backward(LOSSES.get("ldam")(class_counts=counts).to(device), cosine, target),
        },
        device,
        repeats,
    )
    results.append(
        LossTiming(
            "ldam (cosine logits)",
            "cross_entropy (F), same cosine logits",
            1e3 * cosine_times["ldam"],
            1e3 * cosine_times["cross_entropy"],
            softmax_target,
        )
    )

    sigmoid_module = LOSSES.get("sigmoid_focal")(reduction="mean").to(device)
    focal_times = time_interleaved(
        {
            "torchvision": _forward_backward(
                lambda x, t: torchvision.ops.sigmoid_focal_loss(x, t, reduction="mean"), dense, dense_target
            ),
            "sigmoid_focal": _forward_backward(sigmoid_module, dense, dense_target),
        },
        device,
        repeats,
    )
    results.append(
        LossTiming(
            "sigmoid_focal",
            "torchvision.ops.sigmoid_focal_loss",
            1e3 * focal_times["sigmoid_focal"],
            1e3 * focal_times["torchvision"],
            1.0,
        )
    )
    return results


# --------------------------------------------------------------------------------------------
# Wall time and peak memory of a command and every process it starts
# --------------------------------------------------------------------------------------------


def single_thread_worker() -> None:
    """A process pool's ``initializer`` for benchmarks that run one job per core: torch, and the
    BLAS/OpenMP pools NumPy and scikit-learn loaded (threadpoolctl), get one thread each for the
    life of the process. (Libraries loaded later, such as faiss, read ``OMP_NUM_THREADS``: set it
    to 1 before starting the pool.)"""
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    single_thread_worker.limits = threadpool_limits(1)  # kept: the limit lasts while the object lives


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its live descendants (``psutil``)."""
    import psutil

    try:
        return [pid] + [child.pid for child in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return [pid]


def _memory_kib(pid: int) -> tuple[int, int]:
    """(PSS, RSS) of one process in KiB (PSS where the platform has it, else RSS); zeros if it is gone."""
    import psutil

    try:
        info = psutil.Process(pid).memory_full_info()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return 0, 0
    return getattr(info, "pss", info.rss) // 1024, info.rss // 1024


def run_measured(
    command: list[str], *, env: Mapping[str, str] | None = None, interval: float = 0.2, cwd: str | None = None
) -> dict[str, float | int]:
    """Run ``command`` to completion; return its wall time and the peak memory of its process tree.

    Every ``interval`` seconds the command's process and all its descendants (Ray's raylet, GCS
    and worker processes included) are listed and their memory summed:

    - ``peak_pss_mb``: the largest sum of proportional set sizes (shared pages such as libraries
      and Ray's shared-memory object store divided among the processes mapping them), the fair
      "memory this run uses" figure;
    - ``peak_rss_mb``: the largest sum of resident set sizes (shared pages counted once per process);
    - ``peak_processes``: the most processes alive at once; ``wall_s``; ``returncode``.

    Read with psutil (PSS on Linux; elsewhere the RSS stands in for it). Output of the command is
    passed through.
    """
    peaks = {"pss": 0, "rss": 0, "processes": 0}
    began = time.perf_counter()
    child = subprocess.Popen(command, env=None if env is None else dict(env), cwd=cwd)
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            tree = process_tree(child.pid)
            sizes = [_memory_kib(pid) for pid in tree]
            peaks["pss"] = max(peaks["pss"], sum(size[0] for size in sizes))
            peaks["rss"] = max(peaks["rss"], sum(size[1] for size in sizes))
            peaks["processes"] = max(peaks["processes"], len(tree))
            done.wait(interval)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        returncode = child.wait()
    finally:
        done.set()
        sampler.join()
        if child.poll() is None:
            child.kill()
    return {
        "wall_s": time.perf_counter() - began,
        "peak_pss_mb": peaks["pss"] / 1024,
        "peak_rss_mb": peaks["rss"] / 1024,
        "peak_processes": peaks["processes"],
        "returncode": returncode,
    }
