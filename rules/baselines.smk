# Baselines: sampled with the models' budget, then screened by the same rules.


rule sample_baseline:
    input:
        model_split("train"),
    output:
        f"{RESULTS}/samples/{{model}}/samples.parquet",
    log:
        f"{RESULTS}/logs/sample/{{model}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/sample/{{model}}.tsv"
    wildcard_constraints:
        model=_alternatives(BASELINES),
    conda:
        "../envs/analysis.yaml"
    threads: config["baselines"]["threads"]
    resources:
        **rule_resources(
            "sample_baseline",
            mem_mb=4000,
            runtime=120,
        ),
    params:
        settings=settings_of("sample_baseline"),
        num_samples=baseline_num_samples(),
    shell:
        "onnes baseline {wildcards.model} --reference {input:q} --num-samples {params.num_samples}"
        " --out {output:q} --threads {threads} --settings {params.settings} > {log:q} 2>&1"
