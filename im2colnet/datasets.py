"""Placeholder module."""
