"""The committed gRPC code is what protoc makes from proto/labelfree/v1/detect.proto today."""

from labelfree.inference import proto_build


def test_generated_grpc_code_is_current(tmp_path):
    for generated in proto_build.generate(tmp_path):
        committed = proto_build.HERE / generated.name
        assert committed.read_text() == generated.read_text(), (
            f"{committed} is stale: run python -m labelfree.inference.proto_build")
