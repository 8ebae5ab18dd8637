"""The code version recorded in every model manifest."""

from __future__ import annotations

import subprocess
from functools import lru_cache
from pathlib import Path

import labelfree


@lru_cache(maxsize=1)
def code_version() -> str:
    """Package version plus the git commit when run from a checkout."""
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(labelfree.__file__).parent,
                             capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        rev = ""
    return f"{labelfree.__version__}+{rev}" if rev else labelfree.__version__


def _cpu() -> dict:
    """The CPU's model and the vector extensions its float kernels may pick (Linux; {} elsewhere)."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if not line.strip():
                    break  # the first processor is enough
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
    except OSError:
        return {}
    flags = set(fields.get("flags", "").split())
    return {"model": fields.get("model name", ""), "family": fields.get("cpu family", ""),
            "model_number": fields.get("model", ""),
            "vector": sorted(f for f in ("avx2", "fma", "avx512f", "avx512_vnni", "amx_tile") if f in flags)}


def build_host() -> dict:
    """What a trained model's floats depend on besides code, data and seed: the CPU, its thread count and
    the numeric libraries. A seeded build repeats bit for bit on one machine; another CPU may train
    to a different model (bench/results/detector.md, "Eleventh session")."""
    import platform

    host: dict = {"cpu": _cpu(), "machine": platform.machine(), "python": platform.python_version()}
    try:
        import torch

        host.update(torch=torch.__version__, torch_threads=torch.get_num_threads(),
                    cuda=torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)
    except ImportError:
        pass
    try:
        import onnxruntime

        host["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    return host
