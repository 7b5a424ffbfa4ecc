"""Generative models of crystals M = (A, F, L): denoiser, per-modality processes, samplers."""
