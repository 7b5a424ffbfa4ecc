# Screening funnel: validity -> uniqueness -> novelty against the model's training data.


rule screen_samples:
    input:
        samples=f"{RESULTS}/samples/{{model}}/samples.parquet",
        reference=model_split("train"),
    output:
        screened=f"{RESULTS}/screen/{{model}}/screened.parquet",
        funnel=report(
            f"{RESULTS}/screen/{{model}}/funnel.json",
            caption="../workflow/report/funnel.rst",
            category="Screening",
        ),
    log:
        f"{RESULTS}/logs/screen/{{model}}.log",
    conda:
        "../envs/analysis.yaml"
    threads: config["screen"]["threads"]
    resources:
        mem_mb=8000,
        runtime=120,
    params:
        settings=screen_settings,
    shell:
        "onnes screen --samples {input.samples:q} --reference {input.reference:q} --out {output.screened:q}"
        " --funnel {output.funnel:q} --threads {threads} --settings {params.settings} > {log:q} 2>&1"
