# Screening funnel: validity -> uniqueness -> novelty -> MLIP pre-relaxation (sharded)
# -> convex-hull stability, novelty against everything known -> confirmation by a second
# MLIP -> SUN and MSUN; literature metrics beside it. {model} is a trained model, a
# baseline or the user's candidates.


rule screen_match:
    input:
        samples=f"{RESULTS}/samples/{{model}}/samples.parquet",
        reference=model_split("train"),
    output:
        f"{RESULTS}/screen/{{model}}/matched.parquet",
    log:
        f"{RESULTS}/logs/screen/{{model}}_match.log",
    benchmark:
        f"{RESULTS}/benchmarks/screen/{{model}}_match.tsv"
    conda:
        "../envs/analysis.yaml"
    threads: config["screen"]["threads"]
    resources:
        **rule_resources(
            "screen_match",
            mem_mb=8000,
            runtime=120,
        ),
    params:
        settings=settings_of("screen_match"),
    shell:
        "onnes screen match --samples {input.samples:q} --reference {input.reference:q} --out {output:q}"
        " --threads {threads} --settings {params.settings} > {log:q} 2>&1"


rule relax_shard:
    input:
        matched=f"{RESULTS}/screen/{{model}}/matched.parquet",
        references=hull_references_of,
        elements=f"{CACHE}/{ELEMENT_REFERENCE_FILE}",
    output:
        f"{RESULTS}/screen/{{model}}/relax/{{shard}}.parquet",
    log:
        f"{RESULTS}/logs/screen/{{model}}_relax_{{shard}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/screen/{{model}}_relax_{{shard}}.tsv"
    conda:
        "../envs/torch.yaml"
    threads: config["relax"]["threads"]
    resources:
        **rule_resources(
            "relax_shard",
            gpu=int(config["relax"]["device"] == "cuda"),
            mem_mb=16000,
            runtime=240,
        ),
    params:
        settings=settings_of("relax_shard"),
    shell:
        "onnes screen relax --table {input.matched:q} --out {output:q} --shard {wildcards.shard}"
        " --references {input.references:q} --elements {input.elements:q}"
        " --settings {params.settings} > {log:q} 2>&1"


rule hull_references:
    input:
        unpack(hull_reference_inputs),
    output:
        f"{RESULTS}/screen/hull_references.parquet",
    log:
        f"{RESULTS}/logs/screen/hull_references.log",
    localrule: True
    conda:
        "../envs/analysis.yaml"
    params:
        curated=lambda wildcards, input: " ".join(
            f"{name}={path}" for name, path in input.items() if name != "mp20"
        ),
    shell:
        "onnes screen hull-references --mp20 {input.mp20:q} --curated {params.curated}"
        " --out {output:q} > {log:q} 2>&1"


rule known_structures:
    input:
        unpack(known_structure_inputs),
    output:
        f"{RESULTS}/screen/known_structures.parquet",
    log:
        f"{RESULTS}/logs/screen/known_structures.log",
    localrule: True
    conda:
        "../envs/analysis.yaml"
    params:
        tables=lambda wildcards, input: " ".join(
            shlex.quote(f"{name}={path}") for name, path in input.items()
        ),
    shell:
        "onnes screen known --tables {params.tables} --out {output:q} > {log:q} 2>&1"


rule round_feedback:
    input:
        unpack(round_feedback_inputs),
    output:
        references=f"{RESULTS}/screen/rounds/{{round}}/hull_references.parquet",
        known=f"{RESULTS}/screen/rounds/{{round}}/known_structures.parquet",
        summary=f"{RESULTS}/screen/rounds/{{round}}/feedback.json",
    log:
        f"{RESULTS}/logs/screen/round_{{round}}_feedback.log",
    localrule: True
    conda:
        "../envs/analysis.yaml"
    params:
        dft=lambda wildcards, input: " ".join(
            shlex.quote(f"{name}={path}")
            for name, path in input.items()
            if name.isdigit()
        ),
    shell:
        "onnes dft feedback --references {input.references:q} --known {input.known:q}"
        " --elements {input.elements:q} --dft {params.dft} --out-references {output.references:q}"
        " --out-known {output.known:q} --summary {output.summary:q} > {log:q} 2>&1"


rule screen_stability:
    input:
        matched=f"{RESULTS}/screen/{{model}}/matched.parquet",
        relaxed=relax_shards,
        references=hull_references_of,
        elements=f"{CACHE}/{ELEMENT_REFERENCE_FILE}",
        train=model_split("train"),
        known=known_structures_of,
    output:
        f"{RESULTS}/screen/{{model}}/stability.parquet",
    log:
        f"{RESULTS}/logs/screen/{{model}}_stability.log",
    benchmark:
        f"{RESULTS}/benchmarks/screen/{{model}}_stability.tsv"
    conda:
        "../envs/analysis.yaml"
    threads: config["screen"]["threads"]
    resources:
        **rule_resources(
            "screen_stability",
            mem_mb=8000,
            runtime=60,
        ),
    params:
        settings=settings_of("screen_stability"),
    shell:
        "onnes screen stability --matched {input.matched:q} --relaxed {input.relaxed:q}"
        " --references {input.references:q} --elements {input.elements:q} --train {input.train:q}"
        " --known {input.known:q} --out {output:q} --threads {threads} --settings {params.settings}"
        " > {log:q} 2>&1"


rule confirm_candidates:
    input:
        table=f"{RESULTS}/screen/{{model}}/stability.parquet",
        references=hull_references_of,
        elements=f"{CACHE}/{ELEMENT_REFERENCE_FILE}",
    output:
        f"{RESULTS}/screen/{{model}}/confirm.parquet",
    log:
        f"{RESULTS}/logs/screen/{{model}}_confirm.log",
    benchmark:
        f"{RESULTS}/benchmarks/screen/{{model}}_confirm.tsv"
    conda:
        "../envs/torch.yaml"
    threads: config["confirm"]["threads"]
    resources:
        **rule_resources(
            "confirm_candidates",
            gpu=int(config["confirm"]["device"] == "cuda"),
            mem_mb=16000,
            runtime=240,
        ),
    params:
        settings=settings_of("confirm_candidates"),
    shell:
        "onnes screen confirm --table {input.table:q} --out {output:q} --references {input.references:q}"
        " --elements {input.elements:q} --settings {params.settings} > {log:q} 2>&1"


rule screen_finish:
    input:
        unpack(confirm_input),
        stability=f"{RESULTS}/screen/{{model}}/stability.parquet",
        references=hull_references_of,
        elements=f"{CACHE}/{ELEMENT_REFERENCE_FILE}",
        train=model_split("train"),
        known=known_structures_of,
    output:
        screened=f"{RESULTS}/screen/{{model}}/screened.parquet",
        funnel=report(
            f"{RESULTS}/screen/{{model}}/funnel.json",
            caption="../workflow/report/funnel.rst",
            category="Screening",
        ),
    log:
        f"{RESULTS}/logs/screen/{{model}}_finish.log",
    conda:
        "../envs/analysis.yaml"
    resources:
        **rule_resources(
            "screen_finish",
            mem_mb=8000,
            runtime=60,
        ),
    params:
        settings=settings_of("screen_finish"),
        confirmed=lambda wildcards, input: (
            f"--confirmed {shlex.quote(input.confirmed)}"
            if "confirmed" in input.keys()
            else ""
        ),
    shell:
        "onnes screen finish --stability {input.stability:q} {params.confirmed}"
        " --references {input.references:q} --elements {input.elements:q} --train {input.train:q}"
        " --known {input.known:q} --out {output.screened:q} --funnel {output.funnel:q}"
        " --settings {params.settings} > {log:q} 2>&1"


rule reference_fingerprints:
    input:
        f"{RESULTS}/data/{{dataset}}/test.parquet",
    output:
        f"{RESULTS}/data/{{dataset}}/test_fingerprints.parquet",
    log:
        f"{RESULTS}/logs/screen/fingerprints_{{dataset}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/screen/fingerprints_{{dataset}}.tsv"
    conda:
        "../envs/analysis.yaml"
    threads: config["screen"]["threads"]
    resources:
        **rule_resources(
            "reference_fingerprints",
            mem_mb=8000,
            runtime=120,
        ),
    params:
        settings=settings_of("reference_fingerprints"),
    shell:
        "onnes screen fingerprints --table {input:q} --out {output:q} --threads {threads}"
        " --settings {params.settings} > {log:q} 2>&1"


rule screen_metrics:
    input:
        screened=f"{RESULTS}/screen/{{model}}/screened.parquet",
        reference=model_split("test"),
        fingerprints=lambda wildcards: f"{RESULTS}/data/{GRAPH.source_dataset(wildcards.model)}/test_fingerprints.parquet",
        csp=csp_input,
    output:
        report(
            f"{RESULTS}/screen/{{model}}/metrics.json",
            caption="../workflow/report/metrics.rst",
            category="Screening",
        ),
    log:
        f"{RESULTS}/logs/screen/{{model}}_metrics.log",
    benchmark:
        f"{RESULTS}/benchmarks/screen/{{model}}_metrics.tsv"
    conda:
        "../envs/analysis.yaml"
    threads: config["screen"]["threads"]
    resources:
        **rule_resources(
            "screen_metrics",
            mem_mb=8000,
            runtime=120,
        ),
    params:
        settings=settings_of("screen_metrics"),
        csp=lambda wildcards, input: f"--csp {input.csp}" if input.csp else "",
    shell:
        "onnes screen metrics --screened {input.screened:q} --reference {input.reference:q}"
        " --reference-fingerprints {input.fingerprints:q} {params.csp} --out {output:q}"
        " --threads {threads} --settings {params.settings} > {log:q} 2>&1"


rule screen_summary:
    input:
        funnels=expand(
            f"{RESULTS}/screen/{{model}}/funnel.json", model=CANDIDATE_SOURCES
        ),
        metrics=expand(
            f"{RESULTS}/screen/{{model}}/metrics.json", model=CANDIDATE_SOURCES
        ),
    output:
        report(
            f"{RESULTS}/screen/summary.csv",
            caption="../workflow/report/summary.rst",
            category="Screening",
        ),
    log:
        f"{RESULTS}/logs/screen/summary.log",
    localrule: True
    conda:
        "../envs/analysis.yaml"
    params:
        names=CANDIDATE_SOURCES,
    shell:
        "onnes screen summary --names {params.names} --funnels {input.funnels:q} --metrics {input.metrics:q}"
        " --out {output:q} > {log:q} 2>&1"
