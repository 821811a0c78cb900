"""Placeholder demo; replaced below."""
