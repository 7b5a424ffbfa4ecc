# Sampling: shards are independent jobs (own seed each); gathered into one table.


rule sample_shard:
    input:
        model_checkpoint,
    output:
        f"{RESULTS}/samples/{{model}}/shards/{{shard}}.parquet",
    log:
        f"{RESULTS}/logs/sample/{{model}}_{{shard}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/sample/{{model}}_{{shard}}.tsv"
    conda:
        "../envs/torch.yaml"
    threads: lambda wildcards: config["models"][wildcards.model]["sample"]["threads"]
    resources:
        **rule_resources(
            "sample_shard",
            gpu=lambda wildcards: int(
                config["models"][wildcards.model]["sample"]["device"] == "cuda"
            ),
            mem_mb=8000,
            runtime=120,
        ),
    params:
        settings=settings_of("sample_shard"),
    shell:
        "onnes sample shard --checkpoint {input:q} --shard {wildcards.shard} --out {output:q}"
        " --model {wildcards.model} --settings {params.settings} > {log:q} 2>&1"


rule gather_samples:
    input:
        sample_shards,
    output:
        samples=f"{RESULTS}/samples/{{model}}/samples.parquet",
        summary=f"{RESULTS}/samples/{{model}}/summary.json",
    log:
        f"{RESULTS}/logs/sample/{{model}}_gather.log",
    wildcard_constraints:
        model=_alternatives(config["models"]),
    localrule: True
    conda:
        "../envs/torch.yaml"
    shell:
        "onnes sample gather {input:q} --out {output.samples:q} --summary {output.summary:q} > {log:q} 2>&1"


rule sample_csp:
    input:
        checkpoint=model_checkpoint,
        reference=model_split("test"),
    output:
        f"{RESULTS}/samples/{{model}}/csp.parquet",
    log:
        f"{RESULTS}/logs/sample/{{model}}_csp.log",
    benchmark:
        f"{RESULTS}/benchmarks/sample/{{model}}_csp.tsv"
    conda:
        "../envs/torch.yaml"
    threads: lambda wildcards: config["models"][wildcards.model]["sample"]["threads"]
    resources:
        **rule_resources(
            "sample_csp",
            gpu=lambda wildcards: int(
                config["models"][wildcards.model]["sample"]["device"] == "cuda"
            ),
            mem_mb=8000,
            runtime=120,
        ),
    params:
        settings=settings_of("sample_csp"),
    shell:
        "onnes sample csp --checkpoint {input.checkpoint:q} --reference {input.reference:q}"
        " --model {wildcards.model} --out {output:q} --settings {params.settings} > {log:q} 2>&1"


# Reflow (models.<name>.distill): the teacher's ODE samples, each with its prior draw,
# sampled with the teacher's own threads and device.
rule reflow_pairs:
    input:
        distill_source_checkpoint,
    output:
        f"{RESULTS}/models/{{model}}/reflow_pairs.pt",
    log:
        f"{RESULTS}/logs/sample/{{model}}_reflow_pairs.log",
    benchmark:
        f"{RESULTS}/benchmarks/sample/{{model}}_reflow_pairs.tsv"
    conda:
        "../envs/torch.yaml"
    threads: lambda wildcards: teacher_sampling(wildcards)["threads"]
    resources:
        **rule_resources(
            "reflow_pairs",
            gpu=lambda wildcards: int(teacher_sampling(wildcards)["device"] == "cuda"),
            mem_mb=8000,
            runtime=240,
        ),
    params:
        settings=settings_of("reflow_pairs"),
    shell:
        "onnes sample pairs --checkpoint {input:q} --model {wildcards.model} --out {output:q}"
        " --settings {params.settings} > {log:q} 2>&1"
