"""The detector: training on the explainer's boxes, ONNX export, Triton repository, CLI and API.

Defaults shared by the CLI, the API and the build live here, so importing them loads no torch.
"""

# Training length and what of the backbone trains (``train.TrainConfig``). Twelve epochs with the last
# backbone stage trained ("top") against six with it frozen: lion/dev AP 0.66 -> 0.696 (eight runs on a GPU
# and the CPU, 0.655-0.714) and mean IoU 0.69 -> 0.71; single-lion photos with no box at conf 0.5 fell
# from 9% to 3-4%. A CPU build takes about four times as long (bench/results/detector.md, "Twelve epochs
# and the top stage").
EPOCHS = 12
BACKBONE_MODE = "top"
# Decay per step of the moving average of the weights that validation, checkpoints and export use. On the
# two seeds measured, AP 0.655 -> 0.680 and 0.682 -> 0.698 with everything else the same. The decay warms
# up as (1 + step) / (10 + step) and reaches this cap only at step ~1,790, so a thousand-photo round (~840
# steps) never meets it: its average ends with a horizon of ~90 steps, and a cap of 0.998 builds the same
# bytes (bench/results/detector.md, "Fourteenth session").
EMA = 0.995
# A floor on optimiser steps per training round: a small dataset trains more epochs, until it gets about
# the steps a thousand-photo one does (12 epochs of ~70 steps), so this changes nothing above ~1,000 photos.
# lion/dev AP, two seeds each: 100 positives 0.593 at 120 steps (the old floor), 0.629 at 400, 0.669 at 800
# with KEEP below (teacher 0.702); 300 positives 0.653 -> 0.689 (teacher 0.729). bench/results/detector.md,
# "Small datasets: more steps, and the last averaged weights".
MIN_STEPS = 800
# Which weights a training round returns: "last", the moving average at the end of the schedule, or
# "best", the epoch that agreed best with the held-out pseudo-boxes. On a small dataset that split is ten
# photos, and picking by it took epoch 19 of 115 (AP 0.627; the last epoch 0.666). Neutral at 1,000 photos.
KEEP = "last"
KEEP_CHOICES = ("last", "best")
# Train on the teacher's ranked candidate boxes as soft targets (see ``build.build_detector``):
# measured within noise on lion/dev, so off.
SOFT_CANDIDATES = False
# Share of training views of an animal given more, pasted from one-box photos (``data.paste_instance``).
# On lion/dev it buys about +0.03 AP (group photos 0.20 -> 0.26; five runs against five earlier, and
# 0.669 vs 0.628 with calibrated scores) at equal CorLoc. An earlier check blamed it for halving the
# confidence on snow leopards; that came from which epoch the checkpoint was taken at, not from paste,
# and calibrated scores hold with it (bench/results/detector.md, "Calibrated scores").
PASTE = 0.3
# The most of an animal already in the view that a pasted one may cover (share of that animal's box).
PASTE_COVER = 0.4
# Animals pasted into one view at most: the first, then each further one with even odds, so a pasted view
# holds a group of 2-3 as real group photos do. Five seeds on one machine, paired, against one animal:
# lion/dev AP 0.693 -> 0.706 (+0.013, four seeds of five up), group photos' AP up on every seed measured,
# CorLoc 0.862 -> 0.869 (bench/results/detector.md, "Twelfth session"). Eight seeds: 0.703 / 0.862. A third
# pasted animal, or pasting 45% of views, keeps AP and costs CorLoc; a cover of 0.6 costs AP ("Thirteenth
# session").
PASTE_MAX = 2
# Times per epoch a training photo whose labels split a group (two or more full-weight boxes) is seen
# (``train.TrainConfig.group_repeat``). Real groups with a box per animal are what the detector lacks most,
# but 3 against 1, five seeds paired on one machine: lion/dev AP +0.001 (0.689 -> 0.690), CorLoc +0.005,
# and single lions with no box at conf 0.5 rose on four seeds of five. So the option is there, and off
# (bench/results/detector.md, "Fourteenth session").
GROUP_REPEAT = 1
# Platt-scale the exported scores on the held-out split against the teacher's boxes
# (``calibrate.fit_score_calibration``), so a confidence threshold means the same across detectors.
CALIBRATE = True
# Share of each epoch's views that are negative photos (``train.TrainConfig.neg_fraction``). 0.4 with the
# hard-negative draws below boxed held-out pumas 0.28 of the time against 0.50, and missed 10.4% of single lions
# at conf 0.5 against 6.0% (two seeds; bench/results/detector.md, "Sixteenth session"): an option, not the default.
NEG_FRACTION = 0.2
# In self-training rounds, how much more often a negative the last round's detector fires on is drawn into
# an epoch: ``1 + HARD_NEGATIVES x`` its top score (``selftrain.weigh_negatives``; 0: uniform draws). Three
# paired seeds, half of each big-cat class held out of training: held-out pumas boxed at conf 0.5 0.65 -> 0.50,
# caracals 0.33 -> 0.15 (down on every seed), lions of another source still 0.99; lion/dev AP 0.691 -> 0.687
# and CorLoc 0.856 -> 0.855, within the seeds' spread (bench/results/detector.md, "Sixteenth session").
HARD_NEGATIVES = 10.0
