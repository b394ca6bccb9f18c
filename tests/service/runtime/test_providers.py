"""Execution-provider selection and fallback (service/providers.py).

This machine has onnxruntime-gpu and no GPU: ONNX Runtime lists CUDAExecutionProvider as
available, and a session asked for it silently runs on CPU. That is the fallback tested for
real here; "no CUDA provider at all" and "CUDA works" are simulated by replacing what ONNX
Runtime reports. The GPU path itself (a session really running on CUDA) is not executed."""

from __future__ import annotations

import logging
from pathlib import Path

import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from service.runtime import providers as P


@pytest.fixture
def model_path(tmp_path) -> Path:
    """The smallest real ONNX model: y = x + x."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 2])
    graph = helper.make_graph([helper.make_node("Add", ["x", "x"], ["y"])], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "add.onnx"
    onnx.save(model, str(path))
    return path


@pytest.fixture(autouse=True)
def fresh_state(monkeypatch):
    """The module remembers, per process, that CUDA failed and that it warned: start clean."""
    monkeypatch.setattr(P, "_cuda_failed", False)
    monkeypatch.setattr(P, "_warned", False)


def no_cuda(monkeypatch) -> None:
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])


def cuda_listed() -> bool:
    return P.CUDA in ort.get_available_providers()


# --------------------------------------------------------------------------------------------- requested_providers


def test_requested_providers():
    with_cuda = [P.CUDA, P.CPU]
    assert P.requested_providers("cpu", with_cuda) == [P.CPU]
    assert P.requested_providers("auto", with_cuda) == [P.CUDA, P.CPU]  # CPU stays as the fallback
    assert P.requested_providers("auto", [P.CPU]) == [P.CPU]
    assert P.requested_providers("cuda", with_cuda) == [P.CUDA, P.CPU]
    with pytest.raises(P.ProviderError, match=r"no CUDA provider.*install onnxruntime-gpu"):
        P.requested_providers("cuda", [P.CPU])
    with pytest.raises(P.ProviderError, match="auto, cpu or cuda"):
        P.requested_providers("tpu", with_cuda)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------- create_session


def test_cpu_runs_on_cpu_without_a_warning(model_path, caplog):
    with caplog.at_level(logging.WARNING, logger=P.__name__):
        sess, provider = P.create_session(model_path, "cpu", 1)
    assert provider == P.CPU == sess.get_providers()[0]
    assert not caplog.records


def test_auto_without_a_cuda_provider_runs_on_cpu_with_a_warning(model_path, monkeypatch, caplog):
    no_cuda(monkeypatch)
    with caplog.at_level(logging.WARNING, logger=P.__name__):
        sess, provider = P.create_session(model_path, "auto", 1)
        P.create_session(model_path, "auto", 1)
    assert provider == P.CPU
    assert [r.levelname for r in caplog.records] == ["WARNING"]  # once per process, not once per session
    assert "no CUDA provider" in caplog.records[0].getMessage() and "running on CPU" in caplog.records[0].getMessage()
    assert sess.run(None, {"x": [[1.0, 2.0]]})[0].tolist() == [[2.0, 4.0]]


def test_cuda_without_a_cuda_provider_is_an_error(model_path, monkeypatch):
    no_cuda(monkeypatch)
    with pytest.raises(P.ProviderError, match="--device cuda: this onnxruntime has no CUDA provider"):
        P.create_session(model_path, "cuda", 1)


@pytest.mark.skipif(not cuda_listed(), reason="needs onnxruntime-gpu (CUDA listed as available)")
def test_auto_when_the_cuda_session_falls_back_runs_on_cpu_with_a_warning(model_path, caplog):
    """onnxruntime-gpu without a usable GPU: CUDA is 'available', the session ends up on CPU."""
    with caplog.at_level(logging.WARNING, logger=P.__name__):
        sess, provider = P.create_session(model_path, "auto", 1)
    if provider == P.CUDA:
        pytest.skip("a usable GPU is present: no fallback to test")
    assert provider == P.CPU == sess.get_providers()[0]
    assert len(caplog.records) == 1 and "could not be created" in caplog.records[0].getMessage()
    assert P._cuda_failed  # later sessions of this process go straight to CPU
    assert P.requested_providers("auto")[0] == P.CUDA and P.create_session(model_path, "auto", 1)[1] == P.CPU


@pytest.mark.skipif(not cuda_listed(), reason="needs onnxruntime-gpu (CUDA listed as available)")
def test_cuda_when_the_cuda_session_falls_back_is_an_error(model_path):
    try:
        _, provider = P.create_session(model_path, "cuda", 1)
    except P.ProviderError as e:
        assert "--device cuda: the CUDA provider could not be created for add.onnx" in str(e)
    else:
        assert provider == P.CUDA, "cuda must either run on CUDA or fail"
        pytest.skip("a usable GPU is present: no fallback to test")


class FakeSession:
    """Stands in for an InferenceSession that really got the providers it asked for."""

    def __init__(self, path, sess_options=None, providers=None):
        self.asked = providers
        self.options = sess_options

    def get_providers(self):
        return list(self.asked)


def test_auto_uses_cuda_when_the_session_really_gets_it(model_path, monkeypatch, caplog):
    monkeypatch.setattr(ort, "get_available_providers", lambda: [P.CUDA, P.CPU])
    monkeypatch.setattr(ort, "InferenceSession", FakeSession)
    with caplog.at_level(logging.WARNING, logger=P.__name__):
        sess, provider = P.create_session(model_path, "auto", 3)
        _, provider_cuda = P.create_session(model_path, "cuda", 3)
    assert provider == provider_cuda == P.CUDA
    assert sess.asked == [P.CUDA, P.CPU] and not caplog.records
    assert sess.options.intra_op_num_threads == 3


def test_session_options():
    so = P.session_options(3)
    assert so.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert so.intra_op_num_threads == 3 and so.inter_op_num_threads == 1
    assert so.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
    # spin-wait during a run, stop when it ends (the default); or sleep whenever idle
    assert so.get_session_config_entry("session.intra_op.allow_spinning") == "1"
    assert so.get_session_config_entry("session.force_spinning_stop") == "1"
    off = P.session_options(3, spin=False)
    assert off.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    with pytest.raises(RuntimeError, match="does not have configuration"):
        off.get_session_config_entry("session.force_spinning_stop")


# --------------------------------------------------------------------------------------------- threads


@pytest.mark.parametrize(
    "workers, sessions, cores, expected",
    [
        (1, 1, 8, 8),
        (1, 2, 8, 4),  # one worker running two families' sessions
        (2, 2, 8, 2),
        (3, 1, 8, 2),  # rounded down: never more threads than cores
        (4, 2, 2, 1),  # at least one thread each
        (16, 1, 2, 1),
        (0, 1, 4, 4),  # nonsense worker counts are treated as one
    ],
)
def test_threads_per_session(workers, sessions, cores, expected):
    assert P.threads_per_session(workers, sessions_per_worker=sessions, cores=cores) == expected


def test_threads_per_session_counts_the_cores_this_process_may_use(monkeypatch):
    monkeypatch.setattr(P, "_cgroup_cpu_limit", lambda: None)
    monkeypatch.setattr(P.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5}, raising=False)
    assert P.threads_per_session(2) == 3
    monkeypatch.delattr(P.os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(P.os, "cpu_count", lambda: 5)
    assert P.threads_per_session(2) == 2
    monkeypatch.setattr(P.os, "cpu_count", lambda: None)
    assert P.threads_per_session(2) == 1


def test_cgroup_cpu_limit_reads_v2_then_v1(tmp_path):
    assert P._cgroup_cpu_limit(tmp_path) is None  # no cgroup files: no limit
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("150000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert P._cgroup_cpu_limit(tmp_path) == 1.5  # v1
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert P._cgroup_cpu_limit(tmp_path) is None  # v1, unlimited
    (tmp_path / "cpu.max").write_text("200000 100000\n")
    assert P._cgroup_cpu_limit(tmp_path) == 2.0  # v2 wins
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert P._cgroup_cpu_limit(tmp_path) is None


@pytest.mark.parametrize(
    "affinity, quota, expected",
    [(8, None, 8), (8, 2.0, 2), (8, 2.5, 3), (8, 0.5, 1), (2, 16.0, 2)],
)
def test_available_cores_is_the_affinity_capped_by_the_cgroup_quota(monkeypatch, affinity, quota, expected):
    monkeypatch.setattr(P.os, "sched_getaffinity", lambda pid: set(range(affinity)), raising=False)
    monkeypatch.setattr(P, "_cgroup_cpu_limit", lambda: quota)
    assert P.available_cores() == expected
    assert P.threads_per_session(1) == expected


@pytest.mark.parametrize(
    "requested, provider, cores, expected",
    [
        (3, P.CPU, 2, 3),  # asked for: as asked
        (2, P.CUDA, 8, 2),
        (0, P.CPU, 2, 2),  # auto on CPU: one per core
        (0, P.CPU, 1, 1),
        (0, P.CPU, 64, P.MAX_AUTO_WORKERS),  # each holds its own models: capped
        (0, P.CUDA, 8, 1),  # auto on CUDA: one, the GPU does the work
    ],
)
def test_workers_per_family(requested, provider, cores, expected):
    assert P.workers_per_family(requested, provider, cores=cores) == expected


def test_auto_workers_are_single_threaded_on_cpu(monkeypatch):
    monkeypatch.setattr(P, "available_cores", lambda: 4)
    workers = P.workers_per_family(0, P.CPU)
    assert (workers, P.threads_per_session(workers, cores=4)) == (4, 1)


# --------------------------------------------------------------------------------------------- the server


def test_server_with_device_cuda_fails_at_start_up_with_a_clear_error(start_server, model_path):
    try:
        if P.create_session(model_path, "cuda", 1)[1] == P.CUDA:
            pytest.skip("a usable GPU is present: the server would start")
    except P.ProviderError:
        pass
    if not cuda_listed():
        expected = "this onnxruntime has no CUDA provider"
    else:
        expected = "the CUDA provider could not be created"
    srv = start_server("--device", "cuda", wait=False)
    assert srv.proc.wait(120) == 2
    logs = srv.logs()
    if "startup_failed" not in logs:
        pytest.fail(f"no start-up failure logged:\n{logs[-2000:]}")
    assert expected in logs and "--device cuda" in logs


def test_sessions_opt_out_of_kleidiai_by_a_key_this_onnxruntime_reads():
    """ONNX Runtime ignores session config keys it does not know, so a renamed key would silently
    bring back the SME int8 kernels whose answers differ (docs/deploy.md#arm64): the installed
    library must contain the key, and the options must carry it."""
    so = P.session_options(1)
    assert so.get_session_config_entry(P.DISABLE_KLEIDIAI) == "1"
    binary = next(Path(ort.__file__).parent.joinpath("capi").glob("onnxruntime_pybind11_state*"))
    assert P.DISABLE_KLEIDIAI.encode() in binary.read_bytes()
