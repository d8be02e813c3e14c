"""Stylize on Triton: SDK, CLI and server launcher (no torch)."""

__version__ = "0.1.0"
