# Input functions of the later stages (superconductivity, DFT, the report); kept apart
# from their rule files, as Snakemake's linter asks. The paths and the functions
# several stages share are in common.smk.

# -- superconductivity --------------------------------------------------------------
TC_ENABLED = GRAPH.tc_enabled()


def tc_predictor_inputs(wildcards):
    """The labelled data sets, and the MP DFT table (band gaps) when the predictor takes
    its band insulators as negatives or trains the metallicity gate."""
    inputs = {
        role: f"{RESULTS}/data/{d}/curated.parquet"
        for role, d in GRAPH.tc_inputs().items()
    }
    predictor = config["tc"]["predictor"]
    if predictor["negatives"]["enabled"] or predictor["gate"]["enabled"]:
        inputs["dft"] = f"{CACHE}/{HULL_REFERENCE_FILE}"
    return inputs


def reward_set_inputs(wildcards):
    """The screened, Tc-predicted samples a reward fine-tune's rewarded set is drawn from,
    and its data set's training split when reward.mix_data mixes known crystals in."""
    inputs = {
        "predicted": f"{RESULTS}/tc/{GRAPH.reward_samples(wildcards.model)}/predicted.parquet"
    }
    if GRAPH.models[wildcards.model]["reward"]["mix_data"] > 0:
        dataset = GRAPH.source_dataset(wildcards.model)
        inputs["data"] = f"{RESULTS}/data/{dataset}/train.parquet"
    return inputs


def tc_compare_inputs(wildcards):
    inputs = {
        name: f"{RESULTS}/tc/{name}/predicted.parquet" for name in CANDIDATE_SOURCES
    }
    if GRAPH.tc_reference():
        inputs["training"] = f"{RESULTS}/data/{GRAPH.tc_reference()}/train.parquet"
    return inputs


def tc_targets():
    if not TC_ENABLED:
        return []
    ranked = expand(f"{RESULTS}/tc/{{model}}/ranked.parquet", model=CANDIDATE_SOURCES)
    return [
        f"{RESULTS}/tc/predictor/metrics.json",
        *ranked,
        f"{RESULTS}/tc/steering.csv",
    ]


# -- DFT ----------------------------------------------------------------------------
DFT_ENABLED = GRAPH.dft_enabled()


def _cp2k_data_input():
    if config["dft"]["code"] == "cp2k":
        return {"cp2k_data": f"{CACHE}/cp2k_pmg"}
    return {}


def cp2k_data_option(wildcards, input):
    """``--cp2k-data DIR`` when the rule has the CP2K basis/potential index as input."""
    if "cp2k_data" in input.keys():
        return f"--cp2k-data {shlex.quote(input.cp2k_data)}"
    return ""


def dft_select_inputs(wildcards):
    """The ranked candidates of the DFT stage's round (round 0: every configured source)."""
    sources = GRAPH.round_sources(round_of_dir(wildcards.rnd))
    ranked = {name: f"{RESULTS}/tc/{name}/ranked.parquet" for name in sources}
    return {**ranked, **_cp2k_data_input()}


def dft_run_inputs(wildcards):
    """The slot's candidates, and for a code off the MP footing with dft.local_hull the
    round's hull and known crystals (the decomposition products and their structures).
    """
    inputs = {
        "candidates": f"{RESULTS}/dft/{wildcards.rnd}candidates.parquet",
        **_cp2k_data_input(),
    }
    if config["dft"]["local_hull"] and config["dft"]["code"] != "vasp":
        inputs["references"] = (
            f"{RESULTS}/screen/{wildcards.rnd}hull_references.parquet"
        )
        inputs["known"] = f"{RESULTS}/screen/{wildcards.rnd}known_structures.parquet"
        inputs["elements"] = f"{CACHE}/{ELEMENT_REFERENCE_FILE}"
    return inputs


def local_hull_options(wildcards, input):
    """--references/--known/--elements when the slot computes the local hull."""
    return " ".join(
        f"--{name} {shlex.quote(input[name])}"
        for name in ("references", "known", "elements")
        if name in input.keys()
    )


def dft_results(wildcards):
    slots = GRAPH.round_dft_top_k(round_of_dir(wildcards.rnd))
    return expand(
        f"{RESULTS}/dft/{wildcards.rnd}slots/{{slot}}.json", slot=range(slots)
    )


def dft_targets():
    return [f"{RESULTS}/dft/{round_dir(k)}dft.parquet" for k in GRAPH.dft_rounds()]


# -- report -------------------------------------------------------------------------
TRAINED_MODELS = GRAPH.checkpoint_owners()


def report_inputs(wildcards):
    """Every table the campaign page reads, so it is redrawn when any of them changes."""
    inputs = {
        "funnels": expand(
            f"{RESULTS}/screen/{{model}}/funnel.json", model=CANDIDATE_SOURCES
        ),
        "screened": expand(
            f"{RESULTS}/screen/{{model}}/screened.parquet", model=CANDIDATE_SOURCES
        ),
        "curves": expand(
            f"{RESULTS}/models/{{model}}/metrics.csv", model=TRAINED_MODELS
        ),
        "raw": [
            f"{CACHE}/{path}" for d in BUILTIN_DATASETS for path in DATASET_FILES[d]
        ]
        + [f"{CACHE}/{path}" for path in AUXILIARY_FILES]
        + [f for d in CUSTOM_DATASETS for f in user_files(config["data"]["custom"][d])]
        + [f for c in USER_CANDIDATES for f in user_files(config["candidates"][c])],
        "structure_reference": f"{RESULTS}/data/{GRAPH.structure_reference()}/train.parquet",
        "summary": f"{RESULTS}/screen/summary.csv",
        "hull_references": f"{RESULTS}/screen/hull_references.parquet",
    }
    if TC_ENABLED:
        inputs["steering"] = f"{RESULTS}/tc/steering.csv"
        inputs["predictor_metrics"] = f"{RESULTS}/tc/predictor/metrics.json"
        inputs["held_out"] = f"{RESULTS}/tc/predictor/held_out.csv"
        inputs["predicted"] = expand(
            f"{RESULTS}/tc/{{model}}/predicted.parquet", model=CANDIDATE_SOURCES
        )
        inputs["ranked"] = expand(
            f"{RESULTS}/tc/{{model}}/ranked.parquet", model=CANDIDATE_SOURCES
        )
        if GRAPH.tc_reference():
            inputs["tc_reference"] = (
                f"{RESULTS}/data/{GRAPH.tc_reference()}/train.parquet"
            )
    if DFT_ENABLED:
        inputs["dft"] = f"{RESULTS}/dft/dft.parquet"
    # later rounds (loop.rounds): what their references gained and their own DFT tables,
    # read beside the single files below
    inputs["rounds"] = [
        f"{RESULTS}/screen/rounds/{k}/feedback.json" for k in range(1, GRAPH.rounds)
    ] + [f"{RESULTS}/dft/{round_dir(k)}dft.parquet" for k in GRAPH.dft_rounds() if k]
    return inputs


# The single files the page reads, passed by name (--summary PATH, ...): the report
# never rebuilds a path from the results folder for them.
REPORT_FILES = (
    "structure_reference",
    "tc_reference",
    "summary",
    "hull_references",
    "steering",
    "predictor_metrics",
    "held_out",
    "dft",
)


def report_file_options(wildcards, input):
    return " ".join(
        f"--{key.replace('_', '-')} {shlex.quote(input[key])}"
        for key in REPORT_FILES
        if key in input.keys()
    )


def report_targets():
    if not config["report"]["enabled"]:
        return []
    return [f"{RESULTS}/report/index.html"]
