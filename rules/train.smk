# Training: one job per model; data-parallel over GPUs/nodes when configured.


rule train_model:
    input:
        unpack(base_checkpoint),
        train=model_split("train"),
        val=model_split("val"),
    output:
        checkpoint=f"{RESULTS}/models/{{model}}/last.ckpt",
        metrics=f"{RESULTS}/models/{{model}}/metrics.csv",
    log:
        f"{RESULTS}/logs/train/{{model}}.log",
    conda:
        "../envs/torch.yaml"
    threads: lambda wildcards: config["models"][wildcards.model]["train"]["threads"]
    resources:
        **rule_resources(
            "train_model",
            gpu=lambda wildcards: config["models"][wildcards.model]["train"]["gpus"],
            nodes=lambda wildcards: config["models"][wildcards.model]["train"][
                "nodes"
            ],
            mem_mb=16000,
            runtime=24 * 60,
        ),
    params:
        settings=model_settings,
        launcher=train_launcher,
        out_dir=lambda wildcards, output: os.path.dirname(output.checkpoint),
        base=lambda wildcards, input: (
            f"--base {shlex.quote(input.base)}" if "base" in input.keys() else ""
        ),
    shell:
        "{params.launcher} onnes train --model {wildcards.model} --train {input.train:q} --val {input.val:q}"
        " --out-dir {params.out_dir:q} {params.base} --settings {params.settings} > {log:q} 2>&1"
