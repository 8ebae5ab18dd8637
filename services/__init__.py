"""labelfree: object detectors learned from image search, without human labels."""

__version__ = "0.1.0"
