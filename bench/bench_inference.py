"""Inference service benchmark: HTTP overhead, load, Triton, survey throughput.

Measures, on one model and one image:
1. overhead: p50/p99 of ``POST /v1/detect`` (real uvicorn, loopback, keep-alive) against a
   bare ONNX Runtime call, in interleaved rounds so machine load hits both alike;
2. load: throughput of 16 concurrent clients with a fixed request count, against bare ORT; the same
   over gRPC with in-process batching on and off;
3. the same two through Triton (pytriton, ``.venv-triton``) when ``--triton``;
4. survey batch: images/s of the ``detect`` job over stored survey photos (embedded DB).

The model is ``--model DET_DIR``, else an untrained detector of the team's architecture
exported at ``--size`` (cached under /tmp/lf_cache), else the tiny test model.

    nice -n 10 .venv/bin/python bench/bench_inference.py --triton
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from labelfree.core.http_protocol import PROTOCOL as HTTP_PROTOCOL

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CACHE = Path("/tmp/lf_cache/inference_bench")
SHARED = ROOT.parent / "shared" / "data"


def pct(values, q) -> float:
    return float(np.percentile(np.asarray(values) * 1000, q))


def build_model(size: int) -> Path:
    out = CACHE / f"det_{size}"
    if (out / "model.onnx").is_file():
        return out
    try:  # the team's detector, untrained: realistic cost (bench code may import the trainer)
        import json

        import torch

        from labelfree.core.backbone import load_backbone
        from labelfree.trainer.detector.export import export_onnx
        from labelfree.trainer.detector.model import Detector

        torch.manual_seed(0)
        export_onnx(Detector(load_backbone(pretrained=False), num_classes=1), out / "model.onnx",
                    input_size=size, top_k=100)
        (out / "manifest.json").write_text(json.dumps({"name": f"untrained-detector-{size}", "input_size": size,
                                                      "labels": ["animal"], "top_k": 100}))
        (out / "metrics.json").write_text("{}")
    except ImportError as exc:
        print(f"detector code unavailable ({exc}); using the tiny test model", file=sys.stderr)
        from tests.inference.tiny_detector import build_tiny_detector

        build_tiny_detector(out, size=size, work=3)
    return out


def synthetic_photos(n: int, out: Path) -> list[Path]:
    """460x460 JPEGs with photo-like texture (smooth blobs + grain), for machines without shared/."""
    from PIL import Image

    rng = np.random.default_rng(0)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        coarse = rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)
        img = np.asarray(Image.fromarray(coarse).resize((460, 460), Image.BICUBIC), dtype=np.int16)
        img = np.clip(img + rng.normal(0, 12, img.shape), 0, 255).astype(np.uint8)
        path = out / f"synthetic_{i:04d}.jpg"
        Image.fromarray(img).save(path, quality=90)
        paths.append(path)
    return paths


def photos(n: int) -> list[Path]:
    found = sorted((SHARED / "lion" / "dev" / "images").glob("*.jpg"))[:n]
    return found or synthetic_photos(n, CACHE / "synthetic")


def pick_image() -> bytes:
    return photos(1)[0].read_bytes()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_api(env: dict, port: int, log: Path, workers: int = 1, http: str = HTTP_PROTOCOL) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "labelfree.inference.api:app", "--host", "127.0.0.1",
                             "--port", str(port), "--no-access-log", "--log-level", "warning",
                             "--workers", str(workers), "--http", http],
                            env={**os.environ, **env}, stdout=open(log, "wb"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    import httpx

    for _ in range(200):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    raise RuntimeError(f"API did not start: {log.read_text()[-2000:]}")


def stop(proc: subprocess.Popen) -> None:
    import signal

    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=30)


class Client:
    """A lean keep-alive HTTP/1.1 client (stdlib http.client): the load generator should cost
    the shared 2 cores as little as wrk would, so it measures the server, not httpx."""

    def __init__(self, url: str):
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        self.host, self.port, self.path = parts.hostname, parts.port, parts.path
        self.conn = None

    def post(self, data: bytes) -> tuple[int, bytes]:
        import http.client

        if self.conn is None:
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=120)
        self.conn.request("POST", self.path, body=data, headers={"Content-Type": "image/jpeg"})
        resp = self.conn.getresponse()
        return resp.status, resp.read()

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()


def overhead(url: str, data: bytes, bare, rounds: int, per_round: int) -> dict:
    """Interleaved rounds of bare calls and HTTP requests; per-request seconds for each."""
    import json

    bare_t, http_t, server_t = [], [], []
    client = Client(url)
    try:
        for _ in range(5):  # warm-up
            bare()
            assert client.post(data)[0] == 200
        for _ in range(rounds):
            for _ in range(per_round):
                t = time.perf_counter()
                bare()
                bare_t.append(time.perf_counter() - t)
            for _ in range(per_round):
                t = time.perf_counter()
                status, body = client.post(data)
                http_t.append(time.perf_counter() - t)
                if status != 200:
                    raise RuntimeError(f"POST /v1/detect answered {status}: {body[:300]!r}")
                server_t.append(json.loads(body)["timing_ms"]["total"] / 1000)
    finally:
        client.close()
    return {"bare": bare_t, "http": http_t, "server_total": server_t}


def load(url: str, data: bytes, clients: int, total: int) -> float:
    """Requests/s with ``clients`` threads sharing a fixed count of ``total`` requests."""
    left = [total]
    lock = threading.Lock()
    errors = []

    def worker():
        client = Client(url)
        try:
            while True:
                with lock:
                    if left[0] == 0:
                        return
                    left[0] -= 1
                status, body = client.post(data)
                if status != 200:
                    errors.append(body.decode(errors="replace"))
        finally:
            client.close()

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    t = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    elapsed = time.perf_counter() - t
    if errors:
        raise RuntimeError(f"{len(errors)} failed requests, e.g. {errors[0][:300]}")
    return total / elapsed


def wrk_load(url: str, data: bytes, clients: int, seconds: int = 10) -> float | None:
    """Requests/s from wrk (C, 2 threads, ``clients`` connections) for ``seconds``; None without wrk."""
    import re
    import shutil

    if shutil.which("wrk") is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        body, script = Path(tmp) / "body.jpg", Path(tmp) / "post.lua"
        body.write_bytes(data)
        script.write_text(f'local f = io.open("{body}", "rb")\nwrk.method = "POST"\nwrk.body = f:read("*all")\n'
                          'f:close()\nwrk.headers["Content-Type"] = "image/jpeg"\n')
        out = subprocess.run(["wrk", "-t2", f"-c{clients}", f"-d{seconds}s", "-s", str(script), url],
                             capture_output=True, text=True, check=True).stdout
    if re.search(r"Non-2xx", out):
        raise RuntimeError(f"wrk saw failed requests:\n{out}")
    return float(re.search(r"Requests/sec:\s+([0-9.]+)", out).group(1))


def _bare_process(det: str, data: bytes, n: int, threads: int, batch: int, start, done) -> None:
    from labelfree.core.images import decode_image
    from labelfree.inference.backends import Detector, DetectorSpec, OnnxRuntimeBackend

    detector = Detector(OnnxRuntimeBackend(det, intra_op_threads=threads), DetectorSpec.from_dir(det))
    for _ in range(10):
        detector.detect([decode_image(data) for _ in range(batch)])
    start.wait()
    for _ in range(n // batch):
        detector.detect([decode_image(data) for _ in range(batch)])
    done.put(time.perf_counter())


def bare_processes(det: Path, data: bytes, processes: int, total: int, batch: int = 1) -> float:
    """Images/s of the in-process pipeline run by ``processes`` processes at once (no GIL shared),
    each with cores / processes ORT threads, as the API's processes get them; ``batch`` images a
    model call (each decoded on its own)."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    start, done = ctx.Event(), ctx.Queue()
    threads = max(1, len(os.sched_getaffinity(0)) // processes)
    total -= total % (processes * batch)
    procs = [ctx.Process(target=_bare_process, args=(str(det), data, total // processes, threads, batch, start, done))
             for _ in range(processes)]
    for proc in procs:
        proc.start()
    time.sleep(8)  # every process has loaded its model and warmed up
    t = time.perf_counter()
    start.set()
    ends = [done.get(timeout=600) for _ in procs]
    for proc in procs:
        proc.join()
    return processes * (total // processes) / (max(ends) - t)


def bare_throughput(fn, total: int, clients: int = 1) -> float:
    left = [total]
    lock = threading.Lock()

    def worker():
        while True:
            with lock:
                if left[0] == 0:
                    return
                left[0] -= 1
            fn()

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    t = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return total / (time.perf_counter() - t)


def report_latency(name: str, res: dict) -> list[str]:
    b50, b99 = pct(res["bare"], 50), pct(res["bare"], 99)
    h50, h99 = pct(res["http"], 50), pct(res["http"], 99)
    s50 = pct(res["server_total"], 50)
    lines = [f"{name}: bare p50 {b50:.2f} ms p99 {b99:.2f} | POST /v1/detect p50 {h50:.2f} ms p99 {h99:.2f} "
             f"| added p50 {h50 - b50:+.2f} ms (server-side decode+detect p50 {s50:.2f} ms)"]
    print(lines[0], flush=True)
    return lines


def survey_bench(det_dir: Path, n: int, batch_size: int) -> float:
    """images/s of run_survey_detection over ``n`` stored photos (embedded SQLite profile)."""
    from labelfree.core.db import session_scope
    from labelfree.core.jobs import create_job
    from labelfree.core.migrate import upgrade
    from labelfree.core.models import Image, Survey
    from labelfree.core.store import get_store
    from labelfree.inference.tasks import run_survey_detection

    upgrade()
    paths = photos(n)
    store = get_store()
    with session_scope() as s:
        survey = Survey(name="bench")
        s.add(survey)
        s.flush()
        for i, p in enumerate(paths):
            data = p.read_bytes()
            key = store.put_bytes(data, ".jpg")
            s.add(Image(sha256=key.rsplit("/", 1)[1][:64], store_key=key, survey_id=survey.id,
                        file_name=f"CAM{i % 3}/{p.name}", width=0, height=0))
        job_id = create_job(s, "detect", {}).id
        survey_id = survey.id
    params = {"survey_id": survey_id, "batch_size": batch_size, "gap_seconds": 10}
    t = time.perf_counter()
    summary = run_survey_detection(job_id, params, lambda f: None)
    elapsed = time.perf_counter() - t
    assert summary["processed_this_attempt"] == len(paths)
    return len(paths) / elapsed


def wrk_rounds(url: str, data: bytes, args, det: Path, cpus: int, best_pipe: float) -> list[str]:
    """wrk against the API, alternating with the bare pipeline in processes, ``--wrk-rounds`` times:
    machine load drifts over a minute, so each wrk run is paired with the bare run just before it and
    the median of the pair ratios is the figure. Round 1 is compared with ``best_pipe`` too."""
    out = []
    ratios, batched_ratios = [], []
    batch = args.bare_batch
    for i in range(max(1, args.wrk_rounds)):
        bare = best_pipe if i == 0 else bare_processes(det, data, cpus, args.bare_requests)
        bare_b = bare_processes(det, data, cpus, args.bare_requests, batch) if batch > 1 else None
        wrk_tp = wrk_load(url, data, args.clients)
        if wrk_tp is None:
            return out
        ratios.append(wrk_tp / bare)
        line = (f"onnxruntime load from wrk ({args.clients} connections, 10 s), round {i + 1}: {wrk_tp:.1f} req/s | "
                f"bare pipeline just before {bare:.1f}/s | ratio {ratios[-1]:.2f}")
        if bare_b is not None:
            batched_ratios.append(wrk_tp / bare_b)
            line += f" | bare pipeline at batch {batch} {bare_b:.1f}/s | ratio {batched_ratios[-1]:.2f}"
        print(line, flush=True)
        out.append(line)
    line = (f"onnxruntime load from wrk: median ratio to the bare pipeline over {len(ratios)} paired rounds "
            f"{float(np.median(ratios)):.2f} (range {min(ratios):.2f}-{max(ratios):.2f})")
    if batched_ratios:
        line += (f"; to the bare pipeline at batch {batch} {float(np.median(batched_ratios)):.2f} "
                 f"(range {min(batched_ratios):.2f}-{max(batched_ratios):.2f})")
    print(line, flush=True)
    return out + [line]


def _grpc_client(port: int, data: bytes, clients: int, seconds: float, out) -> None:
    """``clients`` concurrent unary Detect calls in a loop for ``seconds`` (grpc.aio, one channel)."""
    import asyncio

    import grpc

    from labelfree.inference import detect_pb2, detect_pb2_grpc

    async def run() -> float:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = detect_pb2_grpc.DetectServiceStub(channel)
            request = detect_pb2.DetectRequest(image=data, file="bench.jpg")
            for _ in range(20):  # warm both server processes and the channel
                await stub.Detect(request, timeout=30)
            done, end = [0], time.perf_counter() + seconds

            async def loop():
                while time.perf_counter() < end:
                    reply = await stub.Detect(request, timeout=30)
                    if reply.failure:
                        raise RuntimeError(reply.failure)
                    done[0] += 1

            t = time.perf_counter()
            await asyncio.gather(*(loop() for _ in range(clients)))
            return done[0] / (time.perf_counter() - t)

    out.put(asyncio.run(run()))


def grpc_load(port: int, data: bytes, clients: int, seconds: float = 10) -> float:
    """Calls/s of ``clients`` concurrent gRPC Detect callers, from a client in its own process."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    proc = ctx.Process(target=_grpc_client, args=(port, data, clients, seconds, out))
    proc.start()
    try:
        return out.get(timeout=seconds + 120)
    finally:
        proc.join(30)


def grpc_rounds(env: dict, tmp: Path, workers: int, data: bytes, args, det: Path, cpus: int) -> list[str]:
    """gRPC Detect under ``--clients`` concurrent callers, with the thread batcher (``inference_batch``
    8) and without it (1), in alternating rounds, each beside the bare pipeline run just before."""
    apis, ports = [], {}
    try:
        for batch in (8, 1):
            ports[batch] = free_port()
            apis.append(start_api({**env, "LABELFREE_GRPC_PORT": str(ports[batch]),
                                   "LABELFREE_INFERENCE_BATCH": str(batch)},
                                  free_port(), tmp / f"api-grpc-{batch}.log", workers, args.http))
        rates: dict[int, list[float]] = {8: [], 1: []}
        ratios: dict[int, list[float]] = {8: [], 1: []}
        out = []
        for i in range(args.grpc_rounds):
            bare = bare_processes(det, data, cpus, args.bare_requests)
            for batch in ((8, 1) if i % 2 == 0 else (1, 8)):
                rate = grpc_load(ports[batch], data, args.clients)
                rates[batch].append(rate)
                ratios[batch].append(rate / bare)
            line = (f"gRPC Detect, {args.clients} concurrent callers, round {i + 1}: batch 8 {rates[8][-1]:.1f}/s, "
                    f"batch 1 {rates[1][-1]:.1f}/s | bare pipeline just before {bare:.1f}/s")
            print(line, flush=True)
            out.append(line)
        line = (f"gRPC Detect: median over {args.grpc_rounds} rounds, batch 8 {np.median(rates[8]):.1f}/s "
                f"(ratio to bare {np.median(ratios[8]):.2f}), batch 1 {np.median(rates[1]):.1f}/s "
                f"(ratio {np.median(ratios[1]):.2f}); batch 8 / batch 1 per round "
                + ", ".join(f"{a / b:.2f}" for a, b in zip(rates[8], rates[1])))
        print(line, flush=True)
        return out + [line]
    finally:
        for api in apis:
            stop(api)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", type=Path)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--per-round", type=int, default=25)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--load-requests", type=int, default=320)
    ap.add_argument("--bare-requests", type=int, default=4000,
                    help="images the bare pipeline runs in processes (~4-8 s: a short run is mostly start jitter)")
    ap.add_argument("--wrk-rounds", type=int, default=3,
                    help="wrk runs, each paired with a bare-pipeline run just before it (median ratio reported)")
    ap.add_argument("--bare-batch", type=int, default=8,
                    help="also pair each wrk run with the bare pipeline at this many images a model call (1 = off): "
                         "the API batches concurrent requests (LABELFREE_INFERENCE_BATCH)")
    ap.add_argument("--grpc-rounds", type=int, default=3,
                    help="alternating rounds of gRPC Detect load with the thread batcher on and off (0: skip)")
    ap.add_argument("--survey-images", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--triton", action="store_true")
    ap.add_argument("--http", default=HTTP_PROTOCOL,
                    help="uvicorn --http of the API (default: the one `labelfree up` serves with; 'httptools' = uvicorn's)")
    ap.add_argument("--api-workers", type=int, default=0,
                    help="uvicorn processes for the API (default: LABELFREE_INFERENCE_WORKERS, as `labelfree up`)")
    ap.add_argument("--survey-batches", default="", help="also time the survey job at these batch sizes, e.g. 1,4")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="lf-bench-inf-"))
    det = args.model or build_model(args.size)
    env = {"LABELFREE_PROFILE": "embedded", "LABELFREE_DATA_DIR": str(tmp / "data"), "LABELFREE_GRPC_PORT": "0",
           "LABELFREE_DETECTOR_DIR": str(det), "LABELFREE_INFERENCE_BACKEND": "onnxruntime",
           "LABELFREE_LOG_JSON": "true"}
    os.environ.update(env)
    from labelfree.core.images import decode_image
    from labelfree.inference.backends import Detector, DetectorSpec, OnnxRuntimeBackend, TritonBackend
    from labelfree.inference.preprocess import make_batch

    data = pick_image()
    spec = DetectorSpec.from_dir(det)
    ort_backend = OnnxRuntimeBackend(det)  # ungated: the bare baseline
    x = make_batch([decode_image(data)], spec.input_size)
    bare_ort = lambda: ort_backend.infer(x)  # noqa: E731
    ort_detector = Detector(ort_backend, spec)
    # The whole in-process pipeline on the same bytes: decode, stretch, run, post-process.
    bare_pipe = lambda: ort_detector.detect([decode_image(data)])  # noqa: E731
    cpus = len(os.sched_getaffinity(0))
    print(f"model {det} S={spec.input_size}; image {len(data)} bytes; load avg {os.getloadavg()[0]:.1f}; "
          f"usable cpus {cpus}", flush=True)
    lines = [f"model `{det.name}` S={spec.input_size}, image {len(data)} B JPEG, load average at start "
             f"{os.getloadavg()[0]:.1f}, {cpus} usable CPUs"]

    from labelfree.core.settings import get_settings

    settings = get_settings()
    workers = args.api_workers or settings.inference_processes  # as `labelfree up` starts it
    if workers == settings.inference_processes:
        env.update(settings.inference_process_env())
    port = free_port()
    api = start_api(env, port, tmp / "api.log", workers, args.http)
    url = f"http://127.0.0.1:{port}/v1/detect"
    try:
        res = overhead(url, data, bare_ort, args.rounds, args.per_round)
        lines += report_latency("onnxruntime, vs bare session.run on the preprocessed tensor", res)
        res = overhead(url, data, bare_pipe, args.rounds, args.per_round)
        lines += report_latency("onnxruntime, vs bare decode+stretch+run+post in process", res)
        bare_tp = bare_throughput(bare_ort, args.load_requests // 4)
        bare_tp16 = bare_throughput(bare_ort, args.load_requests // 4, clients=args.clients)
        pipe_tp = bare_throughput(bare_pipe, args.load_requests // 4)
        pipe_tp16 = bare_throughput(bare_pipe, args.load_requests // 4, clients=args.clients)
        # Does serialising ORT runs (decode overlapping one inference at a time) beat free concurrency?
        gate = threading.Semaphore(1)

        def gated_pipe():
            image = decode_image(data)
            batch = make_batch([image], spec.input_size)
            with gate:
                raw = ort_backend.infer(batch)
            return raw

        gated_tp16 = bare_throughput(gated_pipe, args.load_requests // 4, clients=args.clients)
        line = (f"bare pipeline, {args.clients} threads, one ORT run at a time: {gated_tp16:.1f}/s "
                f"(free concurrency {pipe_tp16:.1f}/s)")
        print(line, flush=True)
        lines.append(line)
        pipe_procs = bare_processes(det, data, cpus, args.bare_requests) if cpus > 1 else pipe_tp
        http_tp = load(url, data, args.clients, args.load_requests)
        best_run, best_pipe = max(bare_tp, bare_tp16), max(pipe_tp, pipe_tp16, pipe_procs)
        line = (f"onnxruntime load ({workers} API processes): {args.clients} clients x {args.load_requests} "
                f"requests: {http_tp:.1f} req/s | bare session.run {bare_tp:.1f}/s sequential, {bare_tp16:.1f}/s "
                f"{args.clients} threads (ratio {http_tp / best_run:.2f}) | bare pipeline {pipe_tp:.1f}/s "
                f"sequential, {pipe_tp16:.1f}/s {args.clients} threads, {pipe_procs:.1f}/s in {cpus} processes "
                f"(ratio to the best {http_tp / best_pipe:.2f})")
        print(line, flush=True)
        lines.append(line)
        lines += wrk_rounds(url, data, args, det, cpus, best_pipe)
    finally:
        stop(api)
    if args.grpc_rounds:
        lines += grpc_rounds(env, tmp, workers, data, args, det, cpus)

    if args.triton:
        from labelfree.inference import triton_launcher

        gp, hp, mp = free_port(), free_port(), free_port()
        proc = triton_launcher.start(det, grpc_port=gp, http_port=hp, metrics_port=mp, log_path=tmp / "triton.log")
        try:
            triton_launcher.wait_ready(f"127.0.0.1:{gp}", "labelfree_detector", proc=proc, log_path=tmp / "triton.log")
            triton = TritonBackend(f"127.0.0.1:{gp}", "labelfree_detector", "1")
            bare_triton = lambda: triton.infer(x)  # noqa: E731
            tenv = {**env, "LABELFREE_INFERENCE_BACKEND": "triton", "LABELFREE_TRITON_URL": f"127.0.0.1:{gp}"}
            api = start_api(tenv, port, tmp / "api-triton.log")
            try:
                res = overhead(url, data, bare_ort, args.rounds, args.per_round)
                lines += report_latency("triton, vs bare ORT session.run", res)
                res = overhead(url, data, bare_pipe, args.rounds, args.per_round)
                lines += report_latency("triton, vs bare ORT pipeline", res)
                res_t = overhead(url, data, bare_triton, 2, args.per_round)
                line = (f"triton client call (gRPC, no HTTP) p50 {pct(res_t['bare'], 50):.2f} ms "
                        f"p99 {pct(res_t['bare'], 99):.2f} ms")
                print(line, flush=True)
                lines.append(line)
                http_tp = load(url, data, args.clients, args.load_requests)
                bare_tp = max(bare_throughput(bare_ort, args.load_requests // 4),
                              bare_throughput(bare_ort, args.load_requests // 4, clients=args.clients))
                pipe_tp = max(bare_throughput(bare_pipe, args.load_requests // 4),
                              bare_throughput(bare_pipe, args.load_requests // 4, clients=args.clients))
                line = (f"triton load: {args.clients} clients: {http_tp:.1f} req/s | bare ORT session.run "
                        f"{bare_tp:.1f}/s (ratio {http_tp / bare_tp:.2f}) | bare ORT pipeline {pipe_tp:.1f}/s "
                        f"(ratio {http_tp / pipe_tp:.2f})")
                print(line, flush=True)
                lines.append(line)
            finally:
                stop(api)
                triton.close()
        finally:
            triton_launcher.stop(proc)

    ips = survey_bench(det, args.survey_images, args.batch_size)
    d = ort_detector
    imgs = [decode_image(data)] * args.batch_size
    t = time.perf_counter()
    for _ in range(3):
        d.detect(imgs)
    model_ips = 3 * args.batch_size / (time.perf_counter() - t)
    line = (f"survey batch (batch {args.batch_size}, {args.survey_images} photos 460x460): {ips:.1f} images/s; "
            f"model alone at batch {args.batch_size}: {model_ips:.1f} images/s")
    print(line, flush=True)
    lines.append(line)
    for bs in [int(b) for b in args.survey_batches.split(",") if b]:
        line = f"survey batch {bs}: {survey_bench(det, args.survey_images, bs):.1f} images/s"
        print(line, flush=True)
        lines.append(line)
    print("\n".join(["", "SUMMARY"] + lines))


if __name__ == "__main__":
    main()
