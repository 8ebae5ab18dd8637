"""Generate the gRPC Python code for ``proto/labelfree/v1/detect.proto``.

The generated modules are committed (``detect_pb2.py``, ``detect_pb2_grpc.py`` beside this
file); ``tests/inference/test_proto.py`` regenerates them and fails if they differ.
Run ``python -m labelfree.inference.proto_build`` after editing the .proto.

protoc writes ``from labelfree.v1 import detect_pb2``, mirroring the proto package; the
code lives in ``labelfree.inference`` instead, so that one import line is rewritten.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

PROTO_ROOT = Path(__file__).resolve().parents[2] / "proto"
PROTO_FILE = "labelfree/v1/detect.proto"
HERE = Path(__file__).resolve().parent
OUTPUTS = ("detect_pb2.py", "detect_pb2_grpc.py")


def generate(out_dir: Path, proto_root: Path = PROTO_ROOT) -> list[Path]:
    """Run protoc into ``out_dir``; return the paths of the generated modules."""
    from grpc_tools import protoc

    out_dir = Path(out_dir)
    with tempfile.TemporaryDirectory() as tmp:
        rc = protoc.main(["protoc", f"-I{proto_root}", f"--python_out={tmp}", f"--grpc_python_out={tmp}",
                          str(proto_root / PROTO_FILE)])
        if rc != 0:
            raise RuntimeError(f"protoc failed with exit code {rc} on {proto_root / PROTO_FILE}")
        written = []
        for name in OUTPUTS:
            text = (Path(tmp) / "labelfree" / "v1" / name).read_text()
            text = text.replace("from labelfree.v1 import detect_pb2", "from labelfree.inference import detect_pb2")
            target = out_dir / name
            target.write_text(text)
            written.append(target)
    return written


if __name__ == "__main__":
    for path in generate(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE):
        print(path)
