"""Sentiment and translation over typed HTTP: LitServe + ONNX Runtime serving the shipped models."""

__version__ = "0.1.0"
