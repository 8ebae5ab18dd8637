"""DetectService over gRPC: Detect, DetectStream, bad images as failures, UNAVAILABLE."""

import grpc
import pytest

from labelfree.inference import detect_pb2, detect_pb2_grpc
from labelfree.inference.grpc_server import start_grpc_server
from tests.conftest import free_port
from tests.factories import jpeg_bytes

pytestmark = pytest.mark.service


@pytest.fixture
def grpc_stub():
    servers, channels = [], []

    def make():
        server = start_grpc_server(0, max_bytes=1_000_000)
        channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
        servers.append(server)
        channels.append(channel)
        return detect_pb2_grpc.DetectServiceStub(channel)

    yield make
    for c in channels:
        c.close()
    for s in servers:
        s.stop(grace=None)


def test_detect_and_stream_match_and_a_bad_image_does_not_end_the_stream(configure, tiny_dir, grpc_stub):
    configure(inference_backend="onnxruntime", detector_dir=tiny_dir)
    stub = grpc_stub()
    good = jpeg_bytes(64, 64, color=(250, 250, 250))
    one = stub.Detect(detect_pb2.DetectRequest(image=good, file="a.jpg", threshold=0.5), timeout=10)
    assert one.file == "a.jpg" and not one.failure and len(one.detections) > 0
    assert len(one.detections[0].bbox) == 4 and one.total_ms > 0
    requests = [detect_pb2.DetectRequest(image=good, file="1"), detect_pb2.DetectRequest(image=b"junk", file="2"),
                detect_pb2.DetectRequest(image=b"", file="3"), detect_pb2.DetectRequest(image=good, file="4")]
    out = list(stub.DetectStream(iter(requests), timeout=10))
    assert [r.file for r in out] == ["1", "2", "3", "4"]
    assert "not a decodable image" in out[1].failure and "empty" in out[2].failure
    assert [(d.category, d.conf) for d in out[0].detections] == [(d.category, d.conf) for d in out[3].detections]


def test_an_unreachable_model_ends_the_call_with_unavailable(configure, det_dir, grpc_stub):
    configure(inference_backend="triton", triton_url=f"127.0.0.1:{free_port()}", detector_dir=det_dir)
    stub = grpc_stub()
    with pytest.raises(grpc.RpcError) as info:
        stub.Detect(detect_pb2.DetectRequest(image=jpeg_bytes(), file="a.jpg"), timeout=20)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE and "Triton" in info.value.details()


def test_grpc_is_served_beside_rest_for_the_app_lifetime(configure, tiny_dir):
    from fastapi.testclient import TestClient

    port = free_port()
    configure(inference_backend="onnxruntime", detector_dir=tiny_dir, grpc_port=port)
    from labelfree.inference.api import app

    with TestClient(app) as client:
        assert client.get("/healthz").status_code == 200
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            reply = detect_pb2_grpc.DetectServiceStub(channel).Detect(
                detect_pb2.DetectRequest(image=jpeg_bytes(), file="x.jpg"), timeout=10)
        assert reply.file == "x.jpg" and not reply.failure
