"""stk: a speech-text toolkit. Importing ``stk`` does not import torch."""

__version__ = "0.1.0"
