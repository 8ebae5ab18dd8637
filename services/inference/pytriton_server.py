"""A real Triton Inference Server (from ``nvidia-pytriton``) serving a detector directory.

Runs in its OWN venv (``.venv-triton``, made by ``setup_triton.sh``), so it imports nothing
from ``labelfree``: it reads the model directory itself. Its Python-backend model
(``labelfree_detector`` by default) runs ONNX Runtime on ``DET_DIR/model.onnx`` and exposes
the detector contract unchanged over KServe v2 (gRPC and HTTP):

- input ``images``: uint8 ``[N, S, S, 3]`` RGB (``S`` from the ONNX graph or ``manifest.json``);
- outputs ``boxes`` float32 ``[N, K, 4]`` normalised xyxy, ``scores`` float32 ``[N, K]``,
  ``classes`` int64 ``[N, K]``.

Dynamic batching is on: Triton merges concurrent requests up to ``--max-batch``. The same
client code talks to this server and to NGC's Triton with the onnxruntime backend.

Usage (``LD_LIBRARY_PATH`` must hold the Python's lib dir; ``labelfree serve-triton`` sets it)::

    .venv-triton/bin/python services/inference/pytriton_server.py --model DET_DIR --grpc-port 8001
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import pathlib
import signal
import sys

import numpy as np
import onnxruntime as ort

log = logging.getLogger("labelfree.pytriton")


def _fixed_dim(dim, what: str) -> int:
    if isinstance(dim, int) and dim > 0:
        return dim
    raise ValueError(f"{what} must be a fixed positive size in the ONNX graph, got {dim!r}")


def load_session(model_dir: pathlib.Path, threads: int) -> tuple[ort.InferenceSession, int, int]:
    """Open ``model_dir/model.onnx``; return the session, input size S and top-K size K."""
    path = model_dir / "model.onnx"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # share cores with Triton's threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    inputs = {i.name: i for i in session.get_inputs()}
    outputs = {o.name: o for o in session.get_outputs()}
    if "images" not in inputs or not {"boxes", "scores", "classes"} <= set(outputs):
        raise ValueError(f"{path} lacks the detector signature: inputs {list(inputs)}, outputs {list(outputs)}")
    shape = inputs["images"].shape
    manifest = model_dir / "manifest.json"
    size = None
    if manifest.is_file():
        size = json.loads(manifest.read_text()).get("input_size")
        if isinstance(size, (list, tuple)):
            size = size[0]
    size = int(size) if size else _fixed_dim(shape[1], "images height")
    k = outputs["scores"].shape[1]
    if not isinstance(k, int) or k <= 0:
        # Exported top-K graphs often leave K symbolic; one dry run on a blank image tells it.
        k = session.run(["scores"], {"images": np.zeros((1, size, size, 3), np.uint8)})[0].shape[1]
    return session, size, _fixed_dim(k, "scores K")


def build_triton(args: argparse.Namespace):
    """Bind the model to a pytriton ``Triton`` instance (not yet serving)."""
    from pytriton.decorators import batch
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
    from pytriton.triton import Triton, TritonConfig

    session, size, k = load_session(pathlib.Path(args.model), args.threads)

    @batch
    def infer(images: np.ndarray) -> dict[str, np.ndarray]:
        # images: (N, S, S, 3) uint8, already batched by Triton's dynamic batcher.
        boxes, scores, classes = session.run(["boxes", "scores", "classes"], {"images": images})
        # ORT may hand back int64 typed as C long long ('q'); pytriton's validator wants np.int64 ('l').
        return {"boxes": boxes.astype(np.float32, copy=False), "scores": scores.astype(np.float32, copy=False),
                "classes": classes.astype(np.int64)}

    config = TritonConfig(grpc_port=args.grpc_port, http_port=args.http_port, metrics_port=args.metrics_port,
                          log_verbose=0)
    triton = Triton(config=config)
    triton.bind(
        model_name=args.name,
        model_version=args.version,
        infer_func=infer,
        inputs=[Tensor(name="images", dtype=np.uint8, shape=(size, size, 3))],
        outputs=[Tensor(name="boxes", dtype=np.float32, shape=(k, 4)),
                 Tensor(name="scores", dtype=np.float32, shape=(k,)),
                 Tensor(name="classes", dtype=np.int64, shape=(k,))],
        config=ModelConfig(max_batch_size=args.max_batch,
                           batcher=DynamicBatcher(max_queue_delay_microseconds=args.queue_delay_us)),
        strict=True,
    )
    log.info("serving %s version %d (S=%d, K=%d) on grpc :%d http :%d", args.name, args.version, size, k,
             args.grpc_port, args.http_port)
    return triton


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="detector directory holding model.onnx")
    parser.add_argument("--name", default="labelfree_detector")
    # A deploy writes <repository>/<name>/<version>/model.onnx; serving that folder under its own
    # version number lets clients pin LABELFREE_TRITON_MODEL_VERSION to what was deployed.
    parser.add_argument("--version", type=int, default=1, help="model version to serve the model as")
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--metrics-port", type=int, default=8002)
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--queue-delay-us", type=int, default=500)
    parser.add_argument("--threads", type=int, default=int(os.environ.get("ORT_THREADS", "2")))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    args = parse_args(argv)
    try:
        triton = build_triton(args)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    # SIGTERM from a test fixture or Kubernetes: stop Triton cleanly, not via atexit at random.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        with triton:
            triton.serve()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
