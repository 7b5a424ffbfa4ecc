# The campaign page (results/{campaign}/report/index.html); every figure and table is
# also registered for `snakemake --report`, with a caption in workflow/report/.


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
        files=report_file_options,
        settings=settings_of("campaign_report"),
    shell:
        "onnes report --results {params.results:q} --out-dir {params.out_dir:q} --sources {params.sources}"
        " --models {params.models} --raw-files {input.raw:q} --cache {params.cache:q} --repo {params.repo:q}"
        " {params.files} --settings {params.settings} > {log:q} 2>&1"
