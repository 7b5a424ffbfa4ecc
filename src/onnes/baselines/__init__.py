"""Baselines that run through the same funnel as the generative models."""

# Each baseline's seed is the campaign seed plus its offset, so the two never share a stream.
SEED_OFFSETS = {"pyxtal": 1, "substitution": 2}


def baseline_seed(name: str, campaign_seed: int) -> int:
    return campaign_seed + SEED_OFFSETS[name]


def sample_baseline(name: str, reference, count: int, config: dict, workers: int = 1):
    """``count`` structures of baseline ``name`` drawn from the training table
    ``reference``, with the validated campaign ``config`` (its seed, the baseline's block
    and the data stage's element filter)."""
    seed = baseline_seed(name, config["seed"])
    settings = config["baselines"][name]
    if name == "pyxtal":
        from onnes.baselines.random_symmetric import sample_random_symmetric

        return sample_random_symmetric(reference, count, seed, settings["max_attempts"], workers=workers)
    if name == "substitution":
        from onnes.baselines.substitution import sample_substitutions
        from onnes.config import allowed_elements

        return sample_substitutions(reference, count, seed, settings["top_k"], settings["min_parent_tc"],
                                    allowed_elements(config["data"]))
    raise ValueError(f"unknown baseline '{name}' (known: {', '.join(SEED_OFFSETS)})")
