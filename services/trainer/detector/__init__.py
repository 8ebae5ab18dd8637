"""The detector: training on the explainer's boxes, ONNX export, Triton repository, CLI and API.

Defaults shared by the CLI, the API and the build live here, so importing them loads no torch.
"""

# Train on the teacher's ranked candidate boxes as soft targets (see ``build.build_detector``):
# measured within noise on lion/dev, so off.
SOFT_CANDIDATES = False
# Share of training views given one more animal pasted from a one-box photo (``data.paste_instance``).
# On lion/dev it buys +0.024 AP (group photos 0.22 -> 0.28) for -0.013 CorLoc (means of five runs
# against five), but on snow leopards, an unseen concept of single-animal photos, it cut the median
# top confidence from 0.99 to 0.56 and gave 11% of photos a second box (1% without): a survey
# thresholding at 0.5 would lose 31% of its cats. So it is an option, off (bench/results/detector.md,
# "Soft candidates and copy-paste").
PASTE = 0.0
