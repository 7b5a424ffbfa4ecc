# Data stage: fetch (mirror or upstream, checksummed) -> curate -> split.


rule fetch_raw_file:
    output:
        f"{CACHE}/{{path}}",
    log:
        f"{CACHE}/logs/{{path}}.log",
    retries: 2
    localrule: True
    conda:
        "../envs/analysis.yaml"
    params:
        mirror=mirror_option(),
        cache=lambda wildcards, output: output[0][: -len(wildcards.path) - 1],
    shell:
        "onnes data fetch {wildcards.path:q} --cache {params.cache:q} {params.mirror} > {log:q} 2>&1"


rule curate_dataset:
    input:
        raw_files,
    output:
        curated=f"{RESULTS}/data/{{dataset}}/curated.parquet",
        dropped=f"{RESULTS}/data/{{dataset}}/dropped.parquet",
        report=f"{RESULTS}/data/{{dataset}}/curation.json",
    log:
        f"{RESULTS}/logs/data/curate_{{dataset}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/data/curate_{{dataset}}.tsv"
    wildcard_constraints:
        dataset=_alternatives(BUILTIN_DATASETS),
    conda:
        "../envs/analysis.yaml"
    threads: config["data"]["threads"]
    resources:
        **rule_resources(
            "curate_dataset",
            mem_mb=8000,
            runtime=60,
        ),
    params:
        settings=settings_of("curate_dataset"),
        cache=lambda wildcards, input: input[0][
            : -len(DATASET_FILES[wildcards.dataset][0]) - 1
        ],
        out_dir=lambda wildcards, output: os.path.dirname(output.curated),
    shell:
        "onnes data curate --dataset {wildcards.dataset} --cache {params.cache:q}"
        " --out-dir {params.out_dir:q} --threads {threads} --settings {params.settings}"
        " > {log:q} 2>&1"


rule import_dataset:
    input:
        lambda wildcards: user_files(config["data"]["custom"][wildcards.dataset]),
    output:
        curated=f"{RESULTS}/data/{{dataset}}/curated.parquet",
        dropped=f"{RESULTS}/data/{{dataset}}/dropped.parquet",
        report=f"{RESULTS}/data/{{dataset}}/curation.json",
    log:
        f"{RESULTS}/logs/data/import_{{dataset}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/data/import_{{dataset}}.tsv"
    wildcard_constraints:
        dataset=_alternatives(CUSTOM_DATASETS),
    conda:
        "../envs/analysis.yaml"
    threads: config["data"]["threads"]
    resources:
        **rule_resources(
            "import_dataset",
            mem_mb=8000,
            runtime=60,
        ),
    params:
        settings=settings_of("import_dataset"),
        out_dir=lambda wildcards, output: os.path.dirname(output.curated),
    shell:
        "onnes data import --dataset {wildcards.dataset} --out-dir {params.out_dir:q}"
        " --threads {threads} --settings {params.settings} > {log:q} 2>&1"


rule combine_datasets:
    input:
        unpack(combined_members),
    output:
        curated=f"{RESULTS}/data/{{dataset}}/curated.parquet",
        dropped=f"{RESULTS}/data/{{dataset}}/dropped.parquet",
        report=f"{RESULTS}/data/{{dataset}}/curation.json",
    log:
        f"{RESULTS}/logs/data/combine_{{dataset}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/data/combine_{{dataset}}.tsv"
    wildcard_constraints:
        dataset=_alternatives(COMBINED_DATASETS),
    conda:
        "../envs/analysis.yaml"
    threads: config["data"]["threads"]
    resources:
        **rule_resources(
            "combine_datasets",
            mem_mb=8000,
            runtime=60,
        ),
    params:
        settings=settings_of("combine_datasets"),
        members=lambda wildcards, input: " ".join(
            shlex.quote(f"--member={name}={path}") for name, path in input.items()
        ),
        out_dir=lambda wildcards, output: os.path.dirname(output.curated),
    shell:
        "onnes data combine --dataset {wildcards.dataset} {params.members}"
        " --out-dir {params.out_dir:q} --threads {threads} --settings {params.settings}"
        " > {log:q} 2>&1"


rule split_dataset:
    input:
        f"{RESULTS}/data/{{dataset}}/curated.parquet",
    output:
        train=f"{RESULTS}/data/{{dataset}}/train.parquet",
        val=f"{RESULTS}/data/{{dataset}}/val.parquet",
        test=f"{RESULTS}/data/{{dataset}}/test.parquet",
    log:
        f"{RESULTS}/logs/data/split_{{dataset}}.log",
    localrule: True
    conda:
        "../envs/analysis.yaml"
    params:
        settings=settings_of("split_dataset"),
        out_dir=lambda wildcards, output: os.path.dirname(output.train),
    shell:
        "onnes data split --dataset {wildcards.dataset} --input {input:q}"
        " --out-dir {params.out_dir:q} --settings {params.settings} > {log:q} 2>&1"


rule curation_summary:
    input:
        expand(f"{RESULTS}/data/{{dataset}}/curation.json", dataset=DATASETS),
    output:
        report(
            f"{RESULTS}/data/curation.json",
            caption="../workflow/report/curation.rst",
            category="Data",
        ),
    log:
        f"{RESULTS}/logs/data/curation_summary.log",
    localrule: True
    conda:
        "../envs/analysis.yaml"
    shell:
        "onnes data summarize {input:q} --out {output:q} > {log:q} 2>&1"
