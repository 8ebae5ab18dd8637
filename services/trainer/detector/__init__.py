"""The detector: training on the explainer's boxes, ONNX export, Triton repository, CLI and API.

Defaults shared by the CLI, the API and the build live here, so importing them loads no torch.
"""

# Train on the teacher's ranked candidate boxes as soft targets (see ``build.build_detector``):
# measured within noise on lion/dev, so off.
SOFT_CANDIDATES = False
# Share of training views given one more animal pasted from a one-box photo (``data.paste_instance``):
# +0.024 AP on lion/dev (group photos 0.22 -> 0.28) at CorLoc -0.013, means of five runs against five
# (bench/results/detector.md, "Soft candidates and copy-paste").
PASTE = 0.3
