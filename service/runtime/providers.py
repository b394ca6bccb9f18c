"""ONNX Runtime execution providers: choose, create, and report the one actually in use.

`auto` asks for CUDA when the installed onnxruntime offers it and a session can really be
created on it, else CPU with a warning. `cuda` insists and fails at start-up with a clear error.
onnxruntime-gpu on a machine without a GPU lists CUDAExecutionProvider as *available* but falls
back to CPU when creating a session, so the provider is read back from the created session.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Literal

import onnxruntime as ort

from service.runtime.artifacts import ArtifactError

log = logging.getLogger(__name__)
Device = Literal["auto", "cpu", "cuda"]
Precision = Literal["auto", "fp32", "int8"]  # of the weights served; auto = int8 on CPU when an artifact ships it
CUDA, CPU = "CUDAExecutionProvider", "CPUExecutionProvider"


class ProviderError(RuntimeError):
    pass


def requested_providers(device: Device, available: list[str] | None = None) -> list[str]:
    available = ort.get_available_providers() if available is None else available
    if device == "cpu":
        return [CPU]
    if device == "cuda":
        if CUDA not in available:
            raise ProviderError(
                f"--device cuda: this onnxruntime has no CUDA provider (available: {available}); install onnxruntime-gpu"
            )
        return [CUDA, CPU]
    if device == "auto":
        return [CUDA, CPU] if CUDA in available else [CPU]
    raise ProviderError(f"device must be auto, cpu or cuda, not {device!r}")


def session_options(intra_threads: int, spin: bool = True) -> ort.SessionOptions:
    """Graph optimizations on, `intra_threads` threads, one operator at a time.

    `spin`: during a run, pool threads spin-wait between operators instead of sleeping, and stop
    when the run ends (session.force_spinning_stop), so they hold no core between runs. A decoder
    step or an LSTM time step is many small parallel sections, each of which a sleeping thread
    must be woken for: measured on 2 cores, spinning gives batched sentiment 1.4x and a batched
    decoder step 1.4x the throughput (the HTTP process and another family's worker still get the
    cores between runs). `spin=False`: threads sleep whenever idle."""
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = intra_threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3  # errors only; the fallback is reported by us, once
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    if spin:
        so.add_session_config_entry("session.force_spinning_stop", "1")
    return so


def _cgroup_cpu_limit(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """The CPU quota of this process's cgroup in cores (a container's `cpus`, a pod's CPU limit),
    or None when there is none. cgroup v2 (`cpu.max`), else v1 (`cpu.cfs_quota_us`)."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return None if quota <= 0 else quota / period
    except (OSError, ValueError):
        return None


def available_cores() -> int:
    """Cores this process may use: its CPU affinity, capped by its cgroup's CPU quota (rounded
    up), so that a pod limited to 2 CPUs on a 64-core node counts 2, not 64."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = _cgroup_cpu_limit()
    if quota is not None:
        cores = min(cores, max(1, math.ceil(quota - 1e-6)))
    return max(1, cores)


MAX_AUTO_WORKERS = 8  # per family: each worker holds its own copy of the models (about 110 MB for translation)


def workers_per_family(requested: int, provider: str, cores: int | None = None) -> int:
    """Inference worker processes per model family. `requested` > 0 wins; 0 = auto:

    - on CPU, one single-threaded worker per core (at most MAX_AUTO_WORKERS). Measured on 2 cores
      with the shipped int8 models, two single-threaded sessions side by side against one session
      with two threads: batched sentiment 1,419 vs 834 reviews/s, single reviews 913 vs 279/s,
      batched translation (beam 5) 263 vs 167 sentences/s. An LSTM or decoder time step is too
      small to split across threads; separate processes each keep a core busy.
    - on CUDA, one: the GPU runs the batches; more processes would only queue on it.
    """
    if requested > 0:
        return requested
    if provider == CUDA:
        return 1
    return max(1, min(MAX_AUTO_WORKERS, available_cores() if cores is None else cores))


def threads_per_session(workers: int, sessions_per_worker: int = 1, cores: int | None = None) -> int:
    """Split the machine's cores among every session of every worker (at least one thread each)."""
    if cores is None:
        cores = available_cores()
    return max(1, cores // max(1, workers * sessions_per_worker))


_cuda_failed = False  # once CUDA failed in this process, auto mode stops retrying it
_warned = False  # the fall-back to CPU is reported once per process, not once per session


def _warn_cpu(reason: str) -> None:
    global _warned
    if not _warned:
        _warned = True
        log.warning("--device auto: %s; running on CPU", reason)


def may_run_on_cuda(device: Device) -> bool:
    """Whether create_session(device=...) will try CUDA at all (it may still fall back to CPU)."""
    return requested_providers(device)[0] == CUDA and not (device == "auto" and _cuda_failed)


def create_session(
    path: Path, device: Device, intra_threads: int, spin: bool = True
) -> tuple[ort.InferenceSession, str]:
    """An InferenceSession on the chosen device, and the provider it actually runs on."""
    global _cuda_failed
    available = ort.get_available_providers()
    providers = requested_providers(device, available)
    if device == "auto" and _cuda_failed:
        providers = [CPU]
    if providers[0] == CUDA:
        ort.set_default_logger_severity(4)  # ORT's own loader errors: we report the outcome ourselves
    try:
        sess = ort.InferenceSession(str(path), sess_options=session_options(intra_threads, spin), providers=providers)
    except Exception as e:  # a file that matches its hash but is not a model ONNX Runtime can load
        raise ArtifactError(
            f"{path}: ONNX Runtime cannot load this model file ({e}); the file is corrupt, "
            "truncated or not an ONNX model"
        ) from e
    finally:
        ort.set_default_logger_severity(2)
    actual = sess.get_providers()[0]
    if providers[0] == CUDA and actual != CUDA:
        _cuda_failed = True
        if device == "cuda":
            raise ProviderError(
                f"--device cuda: the CUDA provider could not be created for {path.name} "
                "(no GPU, or CUDA/cuDNN libraries missing); use --device auto or cpu"
            )
        _warn_cpu(f"the CUDA provider could not be created for {path.name} (no GPU, or CUDA/cuDNN libraries missing)")
    elif device == "auto" and actual != CUDA:
        _warn_cpu(f"this onnxruntime has no CUDA provider (available: {', '.join(available)})")
    return sess, actual
