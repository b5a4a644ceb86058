"""Layers and models."""
__all__ = []
