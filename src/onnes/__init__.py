"""Onnes: generative-model campaigns for superconductor discovery."""

__version__ = "0.1.0"
