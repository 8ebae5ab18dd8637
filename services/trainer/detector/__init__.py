"""The detector: training on the explainer's boxes, ONNX export, Triton repository, CLI and API.

Defaults shared by the CLI, the API and the build live here, so importing them loads no torch.
"""

# Train on the teacher's ranked candidate boxes as soft targets (see ``build.build_detector``).
SOFT_CANDIDATES = False
