"""qconvert: Hugging Face checkpoints to GGUF for llama.cpp, in one step, without torch."""

__version__ = "0.1.0"
