"""Baselines that run through the same funnel as the generative models."""
