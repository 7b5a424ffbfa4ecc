# The campaign page (results/{campaign}/report/index.html); every figure and table is
# also registered for `snakemake --report`, with a caption in workflow/report/.

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
    }
    if TC_ENABLED:
        inputs["predicted"] = expand(
            f"{RESULTS}/tc/{{model}}/predicted.parquet", model=CANDIDATE_SOURCES
        )
        inputs["ranked"] = expand(
            f"{RESULTS}/tc/{{model}}/ranked.parquet", model=CANDIDATE_SOURCES
        )
        if GRAPH.tc_reference():
            inputs["tc_reference"] = f"{RESULTS}/data/{GRAPH.tc_reference()}/train.parquet"
    if DFT_ENABLED:
        inputs["dft"] = f"{RESULTS}/dft/dft.parquet"
    return inputs


def report_reference_options(wildcards, input):
    options = f"--structure-reference {shlex.quote(input.structure_reference)}"
    if "tc_reference" in input.keys():
        options += f" --tc-reference {shlex.quote(input.tc_reference)}"
    return options


def report_targets():
    if not config["report"]["enabled"]:
        return []
    return [f"{RESULTS}/report/index.html"]


rule campaign_report:
    input:
        unpack(report_inputs),
    output:
        index=f"{RESULTS}/report/index.html",
        funnel=report(
            f"{RESULTS}/report/funnel.csv",
            caption="../workflow/report/report_funnel.rst",
            category="Campaign",
        ),
        candidates=report(
            f"{RESULTS}/report/candidates.csv",
            caption="../workflow/report/candidates.rst",
            category="Campaign",
        ),
        funnel_figure=report(
            f"{RESULTS}/report/figures/funnel.png",
            caption="../workflow/report/funnel_figure.rst",
            category="Campaign",
        ),
        training=report(
            f"{RESULTS}/report/figures/training.png",
            caption="../workflow/report/training.rst",
            category="Models",
        ),
        distributions=report(
            f"{RESULTS}/report/figures/distributions.png",
            caption="../workflow/report/distributions.rst",
            category="Campaign",
        ),
        space_groups=report(
            f"{RESULTS}/report/figures/space_groups.png",
            caption="../workflow/report/space_groups.rst",
            category="Campaign",
        ),
        structures=report(
            directory(f"{RESULTS}/report/candidates"),
            patterns=["{name}.png"],
            caption="../workflow/report/structures.rst",
            category="Candidates",
        ),
        provenance=f"{RESULTS}/report/provenance.json",
    log:
        f"{RESULTS}/logs/report/campaign_report.log",
    localrule: True
    conda:
        "../envs/analysis.yaml"
    params:
        results=lambda wildcards, output: os.path.dirname(os.path.dirname(output.index)),
        sources=CANDIDATE_SOURCES,
        models=TRAINED_MODELS,
        cache=CACHE,
        repo=workflow.basedir,
        out_dir=lambda wildcards, output: os.path.dirname(output.index),
        references=report_reference_options,
        settings=settings_of("campaign_report"),
    shell:
        "onnes report --results {params.results:q} --out-dir {params.out_dir:q} --sources {params.sources}"
        " --models {params.models} --raw-files {input.raw:q} --cache {params.cache:q} --repo {params.repo:q}"
        " {params.references} --settings {params.settings} > {log:q} 2>&1"
