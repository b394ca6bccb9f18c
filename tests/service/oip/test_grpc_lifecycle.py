"""The gRPC server's life in the HTTP process: a taken port is a clear start-up error, and SIGTERM
drains gRPC as it drains HTTP (calls in flight are answered, new ones refused, exit 0)."""

from __future__ import annotations

import signal
import socket
import threading
import time

import numpy as np
import pytest
import tritonclient.grpc as tgrpc
from tritonclient.utils import InferenceServerException

from tests.service_http import frozen, in_flight, inference_workers, wait_for


def _text(t: str):
    x = tgrpc.InferInput("TEXT", [1], "BYTES")
    x.set_data_from_numpy(np.array([t.encode()], dtype=object))
    return x


def test_a_taken_grpc_port_fails_the_start_and_says_so(start_server):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        srv = start_server("--grpc-port", str(port), wait=False)
        assert srv.proc.wait(60) == 2
    assert f"cannot listen for gRPC on 127.0.0.1:{port}" in srv.logs() and "--grpc-port" in srv.logs()


def test_grpc_off(start_server):
    srv = start_server("--grpc-port", "0")
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", srv.grpc_port)) != 0  # nothing listens where gRPC would have


def test_sigterm_answers_grpc_calls_in_flight_and_refuses_new_ones(start_server):
    srv = start_server("--workers", "1", "--shutdown-grace", "20")
    client = tgrpc.InferenceServerClient(srv.grpc_url)
    answered: list = []
    with frozen(inference_workers(srv.proc.pid)):
        call = threading.Thread(target=lambda: answered.append(client.infer("sentiment", [_text("held in flight")])))
        call.start()
        wait_for(lambda: in_flight(srv.url, "sentiment") >= 1, what="the gRPC call in flight")
        srv.proc.send_signal(signal.SIGTERM)
        time.sleep(1.5)
        late = tgrpc.InferenceServerClient(srv.grpc_url)
        with pytest.raises(InferenceServerException) as e:
            late.infer("sentiment", [_text("too late")], client_timeout=10)
        assert e.value.status() == "StatusCode.UNAVAILABLE", e.value
    call.join(30)
    assert answered and answered[0].as_numpy("LABEL").shape == (1,)
    assert srv.proc.wait(40) == 0
