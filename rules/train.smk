# Training: one job per model; data-parallel over GPUs/nodes when configured.


rule train_model:
    input:
        unpack(base_checkpoint),
        unpack(reflow_pairs),
        train=training_split("train"),
        val=training_split("val"),
    output:
        checkpoint=f"{RESULTS}/models/{{model}}/last.ckpt",
        metrics=f"{RESULTS}/models/{{model}}/metrics.csv",
    log:
        f"{RESULTS}/logs/train/{{model}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/train/{{model}}.tsv"
    # A preempted or timed-out job exits 75 with its state saved; the retry resumes it.
    retries: 5
    conda:
        "../envs/torch.yaml"
    threads: lambda wildcards: config["models"][wildcards.model]["train"]["threads"]
    resources:
        **rule_resources(
            "train_model",
            gpu=train_resource("gpu"),
            gres=train_resource("gres"),
            nodes=train_resource("nodes"),
            tasks=train_resource("tasks"),
            mpi=train_resource("mpi"),
            # no --ntasks-per-gpu: one task (one torchrun) per node, not per GPU
            tasks_per_gpu=0,
            mem_mb=16000,
            runtime=24 * 60,
            # SIGUSR1 five minutes before the time limit: the loop saves and exits 75
            slurm_extra="--signal=USR1@300",
        ),
    params:
        settings=settings_of("train_model"),
        launcher=train_launcher,
        out_dir=lambda wildcards, output: os.path.dirname(output.checkpoint),
        base=lambda wildcards, input: (
            f"--base {shlex.quote(input.base)}" if "base" in input.keys() else ""
        ),
        pairs=lambda wildcards, input: (
            f"--pairs {shlex.quote(input.pairs)}" if "pairs" in input.keys() else ""
        ),
    shell:
        "{params.launcher} onnes train --model {wildcards.model} --train {input.train:q} --val {input.val:q}"
        " --out-dir {params.out_dir:q} {params.base} {params.pairs} --settings {params.settings} > {log:q} 2>&1"
