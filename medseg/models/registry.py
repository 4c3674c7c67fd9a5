"""The model registry (kept apart from ``models/__init__`` so model files can import it
without importing each other)."""

from medseg.registry import Registry

MODELS = Registry("model")
