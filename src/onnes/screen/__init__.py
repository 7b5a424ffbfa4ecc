"""Screening funnel of generated structures (validity first; more stages to come)."""
