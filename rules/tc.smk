# Superconductivity: Tc predictor (held-out figures), Tc of every screened candidate,
# the ranking that feeds DFT, and the steering comparison table.


rule tc_predictor:
    input:
        unpack(tc_predictor_inputs),
    output:
        model=f"{RESULTS}/tc/predictor/model.json",
        domain=f"{RESULTS}/tc/predictor/domain.npz",
        metrics=f"{RESULTS}/tc/predictor/metrics.json",
        held_out=f"{RESULTS}/tc/predictor/held_out.csv",
    log:
        f"{RESULTS}/logs/tc/predictor.log",
    benchmark:
        f"{RESULTS}/benchmarks/tc/predictor.tsv"
    conda:
        "../envs/analysis.yaml"
    threads: config["tc"]["predictor"]["threads"]
    resources:
        **rule_resources(
            "tc_predictor",
            mem_mb=8000,
            runtime=120,
        ),
    params:
        inputs=lambda wildcards, input: " ".join(
            f"--{name} {shlex.quote(path)}" for name, path in input.items()
        ),
        out_dir=lambda wildcards, output: os.path.dirname(output.model),
        settings=settings_of("tc_predictor"),
    shell:
        "onnes tc train {params.inputs} --out-dir {params.out_dir:q} --settings {params.settings}"
        " > {log:q} 2>&1"


rule tc_rank:
    input:
        screened=f"{RESULTS}/screen/{{model}}/screened.parquet",
        predictor=f"{RESULTS}/tc/predictor/model.json",
        domain=f"{RESULTS}/tc/predictor/domain.npz",
    output:
        predicted=f"{RESULTS}/tc/{{model}}/predicted.parquet",
        ranked=f"{RESULTS}/tc/{{model}}/ranked.parquet",
    log:
        f"{RESULTS}/logs/tc/{{model}}_rank.log",
    conda:
        "../envs/analysis.yaml"
    resources:
        **rule_resources(
            "tc_rank",
            mem_mb=8000,
            runtime=60,
        ),
    params:
        predictor_dir=lambda wildcards, input: os.path.dirname(input.predictor),
        settings=settings_of("tc_rank"),
    shell:
        "onnes tc rank --screened {input.screened:q} --predictor {params.predictor_dir:q}"
        " --predicted {output.predicted:q} --out {output.ranked:q} --settings {params.settings}"
        " > {log:q} 2>&1"


rule tc_compare:
    input:
        unpack(tc_compare_inputs),
    output:
        table=f"{RESULTS}/tc/steering.csv",
        json=f"{RESULTS}/tc/steering.json",
    log:
        f"{RESULTS}/logs/tc/steering.log",
    localrule: True
    conda:
        "../envs/analysis.yaml"
    params:
        predicted=lambda wildcards, input: " ".join(
            shlex.quote(f"{name}={path}")
            for name, path in input.items()
            if name != "training"
        ),
        training=lambda wildcards, input: (
            f"--training {shlex.quote(input.training)}"
            if "training" in input.keys()
            else ""
        ),
        pairs=lambda wildcards: " ".join(
            shlex.quote(f"{a}={b}") for a, b in GRAPH.steering_pairs().items()
        ),
        settings=settings_of("tc_compare"),
    shell:
        "onnes tc compare --predicted {params.predicted} --pairs {params.pairs} {params.training}"
        " --out {output.table:q} --settings {params.settings} > {log:q} 2>&1"


rule reward_set:
    input:
        unpack(reward_set_inputs),
    output:
        train=f"{RESULTS}/tc/{{model}}/reward/train.parquet",
        val=f"{RESULTS}/tc/{{model}}/reward/val.parquet",
        summary=f"{RESULTS}/tc/{{model}}/reward/reward.json",
    log:
        f"{RESULTS}/logs/tc/{{model}}_reward.log",
    localrule: True
    conda:
        "../envs/analysis.yaml"
    params:
        out_dir=lambda wildcards, output: os.path.dirname(output.train),
        data=lambda wildcards, input: (
            f"--data {shlex.quote(input.data)}" if "data" in input.keys() else ""
        ),
        settings=settings_of("reward_set"),
    shell:
        "onnes tc reward-set --model {wildcards.model} --predicted {input.predicted:q} {params.data}"
        " --out-dir {params.out_dir:q} --settings {params.settings} > {log:q} 2>&1"
