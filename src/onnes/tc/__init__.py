"""Superconductivity: Tc predictor, steering comparison, candidate ranking."""
