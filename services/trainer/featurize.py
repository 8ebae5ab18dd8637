"""Backbone featurisation through ONNX Runtime, with a per-image feature cache.

Conventions:
- images reach the network as uint8 ``(N, S, S, 3)`` RGB, stretched to ``S x S``
  (``S`` = backbone ``input_size``) with PIL bilinear resampling after EXIF orientation;
- a feature is the backbone's last map, mean-pooled: float32 ``(D,)``, ``D = feat_dim``;
- *views* are feature augmentations: ``full`` (the image), ``flip`` (mirrored left-right),
  ``crop`` (the central 80 % square-stretched back to ``S x S``).

The cache stores one small Parquet object per (backbone version, view, image sha256) in
the object store, so it is content addressed, safe under concurrent writers and shared by
every dataset that contains the same bytes.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from labelfree.core.images import ImageDecodeError, decode_image

VIEWS = ("full", "flip", "crop")
CROP_FRACTION = 0.8


def image_views(image: Image.Image, size: int, views: Sequence[str] = ("full",)) -> dict[str, np.ndarray]:
    """The requested views of an RGB image, each uint8 ``(size, size, 3)``."""
    unknown = set(views) - set(VIEWS)
    if unknown:
        raise ValueError(f"unknown views {sorted(unknown)}; choose from {VIEWS}")
    out: dict[str, np.ndarray] = {}
    full = np.asarray(image.resize((size, size), Image.BILINEAR))
    if "full" in views:
        out["full"] = full
    if "flip" in views:
        out["flip"] = np.ascontiguousarray(full[:, ::-1])
    if "crop" in views:
        w, h = image.size
        dx, dy = w * (1 - CROP_FRACTION) / 2, h * (1 - CROP_FRACTION) / 2
        out["crop"] = np.asarray(image.resize((size, size), Image.BILINEAR, box=(dx, dy, w - dx, h - dy)))
    return out


def phash_hex(image: Image.Image) -> str:
    """64-bit perceptual hash as 16 hex digits (imagehash's DCT phash)."""
    import imagehash

    return str(imagehash.phash(image))


def export_featurizer(backbone, path: str | Path) -> Path:
    """Write an ONNX graph: ``images`` uint8 ``(N, H, W, 3)`` -> ``features`` float32 ``(N, D)``."""
    import torch

    from labelfree.core.backbone import preprocess_uint8

    class _Featurizer(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, images):
            return self.net(preprocess_uint8(images)).mean(dim=(2, 3))

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.onnx")
    sample = torch.zeros((1, backbone.input_size, backbone.input_size, 3), dtype=torch.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _Featurizer(backbone).eval(), (sample,), str(tmp), input_names=["images"], output_names=["features"],
            dynamic_axes={"images": {0: "N", 1: "H", 2: "W"}, "features": {0: "N"}}, opset_version=17, dynamo=False,
        )
    tmp.replace(path)  # atomic: concurrent callers never load a half-written graph
    return path


def make_session(model: str | Path | bytes, threads: int | None = None):
    """An ONNX Runtime CPU session; ``threads`` caps intra-op threads (None: ORT default)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    # Idle workers sleep instead of spinning: on a shared machine spinning steals the cores.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model if isinstance(model, bytes) else str(model), opts,
                                providers=["CPUExecutionProvider"])


class OnnxFeaturizer:
    """Batched ONNX Runtime featuriser for one backbone version."""

    def __init__(self, onnx_path: str | Path, version: str, input_size: int, threads: int | None = None):
        self.onnx_path = Path(onnx_path)
        self.version = version
        self.input_size = input_size
        self.session = make_session(self.onnx_path, threads)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """uint8 ``(N, S, S, 3)`` -> float32 ``(N, D)``."""
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"expected uint8 (N, H, W, 3), got {images.dtype} {images.shape}")
        return self.session.run(["features"], {"images": images})[0]


def get_featurizer(backbone_name: str, cache_dir: str | Path, threads: int | None = None) -> OnnxFeaturizer:
    """Load (exporting once per backbone version into ``cache_dir``) the ONNX featuriser."""
    from labelfree.core.backbone import load_backbone

    backbone = load_backbone(backbone_name)
    path = Path(cache_dir) / "featurizers" / f"{backbone.version}.onnx"
    if not path.is_file():
        export_featurizer(backbone, path)
    return OnnxFeaturizer(path, backbone.version, backbone.input_size, threads)


class FeatureCache:
    """Features keyed by (backbone version, view, image sha256) in an object store.

    ``store`` is anything with ``get/put/exists`` (see ``labelfree.core.store``).
    """

    def __init__(self, store, version: str):
        self.store = store
        self.version = version
        self.hits = 0
        self.misses = 0

    def key(self, sha256: str, view: str) -> str:
        return f"features/{self.version}/{view}/{sha256[:2]}/{sha256}.parquet"

    def get(self, sha256: str, view: str) -> tuple[np.ndarray, str] | None:
        """``(feature (D,) float32, phash hex)`` or None on a miss."""
        key = self.key(sha256, view)
        if not self.store.exists(key):
            self.misses += 1
            return None
        table = pq.read_table(io.BytesIO(self.store.get(key)))
        self.hits += 1
        return np.asarray(table.column("feature")[0].as_py(), dtype=np.float32), table.column("phash")[0].as_py()

    def put(self, sha256: str, view: str, feature: np.ndarray, phash: str) -> None:
        table = pa.table({
            "sha256": [sha256], "view": [view], "backbone_version": [self.version], "phash": [phash],
            "feature": pa.array([np.asarray(feature, np.float32)], type=pa.list_(pa.float32())),
        })
        buf = io.BytesIO()
        pq.write_table(table, buf)
        self.store.put(self.key(sha256, view), buf.getvalue())


@dataclass
class FeatureSet:
    """Features of a list of files. Row ``i`` of ``features[view]`` is ``files[i]``."""

    files: list[Path]
    sha256: list[str]
    phash: list[str]
    features: dict[str, np.ndarray]
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # (file, reason)
    cache_hits: int = 0
    computed: int = 0


def featurize_files(
    files: Iterable[str | Path],
    featurizer: Callable[[np.ndarray], np.ndarray],
    input_size: int,
    *,
    views: Sequence[str] = ("full",),
    cache: FeatureCache | None = None,
    batch_size: int = 32,
    max_pixels: int = 64_000_000,
    progress: Callable[[int, int], None] | None = None,
) -> FeatureSet:
    """Featurise image files; unreadable files are skipped and listed, never raised.

    ``featurizer`` maps uint8 ``(B, S, S, 3)`` to float32 ``(B, D)``. Images are decoded only
    when some requested view is not cached. Duplicate bytes are featurised once.
    """
    files = [Path(f) for f in files]
    if "full" not in views:
        raise ValueError(f"views must include 'full', got {list(views)}")
    kept: list[Path] = []
    shas: list[str] = []
    phashes: list[str] = []
    rows: dict[str, list[np.ndarray | None]] = {v: [] for v in views}
    pending: list[tuple[int, str, np.ndarray]] = []  # (row, view, pixels) waiting for a batch
    skipped: list[tuple[Path, str]] = []
    hits = computed = 0
    by_sha: dict[str, int] = {}

    def flush() -> None:
        nonlocal computed
        if not pending:
            return
        feats = featurizer(np.stack([p for _, _, p in pending]))
        for (row, view, _), feat in zip(pending, feats):
            rows[view][row] = feat
            if cache is not None:
                cache.put(shas[row], view, feat, phashes[row])
        computed += len(pending)
        pending.clear()

    for n, path in enumerate(files):
        try:
            data = path.read_bytes()
        except OSError as exc:
            skipped.append((path, f"unreadable: {exc.strerror or exc}"))
            continue
        sha = hashlib.sha256(data).hexdigest()
        if sha in by_sha:  # same bytes under another name: reuse the row's features
            src = by_sha[sha]
            kept.append(path), shas.append(sha), phashes.append(phashes[src])
            for v in views:
                rows[v].append(rows[v][src])
            if any(rows[v][src] is None for v in views):  # still pending: copy once flushed
                flush()
                for v in views:
                    rows[v][-1] = rows[v][src]
            continue
        cached = {v: cache.get(sha, v) for v in views} if cache is not None else {v: None for v in views}
        missing = [v for v in views if cached[v] is None]
        phash = next((c[1] for c in cached.values() if c is not None), None)
        if missing:
            try:
                image = decode_image(data, max_pixels=max_pixels)
            except ImageDecodeError as exc:
                skipped.append((path, exc.detail))
                continue
            pixels = image_views(image, input_size, missing)
            phash = phash or phash_hex(image)
        row = len(kept)
        by_sha[sha] = row
        kept.append(path), shas.append(sha), phashes.append(phash)
        for v in views:
            if cached[v] is not None:
                rows[v].append(cached[v][0])
                hits += 1
            else:
                rows[v].append(None)
                pending.append((row, v, pixels[v]))
        if len(pending) >= batch_size:
            flush()
        if progress is not None:
            progress(n + 1, len(files))
    flush()
    dim = next((r.shape[0] for r in rows["full"] if r is not None), 0)
    features = {v: np.stack(rows[v]).astype(np.float32) if rows[v] else np.zeros((0, dim), np.float32)
                for v in views}
    return FeatureSet(kept, shas, phashes, features, skipped, hits, computed)
