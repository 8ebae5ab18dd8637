"""The detector: training on the explainer's boxes, ONNX export, Triton repository, CLI and API.

Defaults shared by the CLI, the API and the build live here, so importing them loads no torch.
"""

# Train on the teacher's ranked candidate boxes as soft targets (see ``build.build_detector``):
# measured within noise on lion/dev, so off.
SOFT_CANDIDATES = False
# Share of training views given one more animal pasted from a one-box photo (``data.paste_instance``):
# +0.03 AP on lion/dev (group photos 0.22 -> 0.30) at CorLoc -0.01, means of three runs against five
# (bench/results/detector.md, "Soft candidates and copy-paste").
PASTE = 0.3
