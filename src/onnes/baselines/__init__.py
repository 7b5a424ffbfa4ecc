"""Baselines that run through the same funnel as the generative models."""

# Each baseline's seed is the campaign seed plus its offset, so the two never share a stream.
SEED_OFFSETS = {"pyxtal": 1, "substitution": 2}


def baseline_seed(name: str, campaign_seed: int) -> int:
    return campaign_seed + SEED_OFFSETS[name]
