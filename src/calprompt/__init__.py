"""calprompt: calibrated prompt tuning of CLIP-like vision-language models."""

__version__ = "0.1.0"
