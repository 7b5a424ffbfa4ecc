# The user's own candidate structures (config candidates): imported through curation's
# checks, then screened by the same rules as a model's samples.


rule import_candidates:
    input:
        lambda wildcards: user_files(config["candidates"][wildcards.model]),
    output:
        samples=f"{RESULTS}/samples/{{model}}/samples.parquet",
        dropped=f"{RESULTS}/samples/{{model}}/dropped.parquet",
        report=f"{RESULTS}/samples/{{model}}/curation.json",
    log:
        f"{RESULTS}/logs/sample/{{model}}.log",
    wildcard_constraints:
        model=_alternatives(USER_CANDIDATES),
    conda:
        "../envs/analysis.yaml"
    threads: config["data"]["threads"]
    resources:
        **rule_resources(
            "import_candidates",
            mem_mb=8000,
            runtime=60,
        ),
    params:
        settings=settings_of("import_candidates"),
        out_dir=lambda wildcards, output: os.path.dirname(output.samples),
    shell:
        "onnes data import --candidates {wildcards.model} --out-dir {params.out_dir:q}"
        " --table-name samples.parquet --threads {threads} --settings {params.settings}"
        " > {log:q} 2>&1"
