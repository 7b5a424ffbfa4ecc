# DFT verification: the best top_k ranked candidates over all sources, one job per slot
# (atomate2 flows run by jobflow inside the job; calculations under dft/{source}/{id}/),
# gathered into dft.parquet. Slots, not candidate ids, name the jobs, so the DAG is known
# before the ranking exists (no checkpoint); a slot without a candidate records that.


rule dft_cp2k_data:
    output:
        directory(f"{CACHE}/cp2k_pmg"),
    log:
        f"{RESULTS}/logs/dft/cp2k_data.log",
    localrule: True
    conda:
        "../envs/dft.yaml"
    params:
        source=config["dft"]["cp2k"]["data_source"],
    shell:
        "onnes dft cp2k-data --source {params.source:q} --out {output:q} > {log:q} 2>&1"


rule dft_select:
    input:
        unpack(dft_select_inputs),
    output:
        f"{RESULTS}/dft/{{rnd}}candidates.parquet",
    log:
        f"{RESULTS}/logs/dft/{{rnd}}select.log",
    localrule: True
    conda:
        "../envs/dft.yaml"
    params:
        ranked=lambda wildcards, input: " ".join(
            shlex.quote(f"{name}={path}")
            for name, path in input.items()
            if name != "cp2k_data"
        ),
        cp2k_data=cp2k_data_option,
        settings=settings_of("dft_select"),
    shell:
        "onnes dft select --ranked {params.ranked} {params.cp2k_data} --out {output:q}"
        " --settings {params.settings} > {log:q} 2>&1"


rule dft_run:
    input:
        unpack(dft_run_inputs),
    output:
        f"{RESULTS}/dft/{{rnd}}slots/{{slot}}.json",
    log:
        f"{RESULTS}/logs/dft/{{rnd}}run_{{slot}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/dft/{{rnd}}run_{{slot}}.tsv"
    conda:
        "../envs/dft.yaml"
    threads: config["dft"]["resources"]["threads"]
    resources:
        **rule_resources(
            "dft_run",
            nodes=config["dft"]["resources"]["nodes"],
            tasks=config["dft"]["resources"]["tasks"],
            mpi=dft_mpi,
            cpus_per_task=config["dft"]["resources"]["threads"],
            mem_mb=config["dft"]["resources"]["mem_mb"],
            runtime=config["dft"]["resources"]["runtime"],
        ),
    params:
        # dft/slots/{slot}.json -> dft/: calculations go to dft/{source}/{id}/
        work_root=lambda wildcards, output: os.path.dirname(os.path.dirname(output[0])),
        cp2k_data=cp2k_data_option,
        local_hull=local_hull_options,
        settings=settings_of("dft_run"),
        launcher=lambda wildcards, resources: (
            f"--launcher {resources.mpi}" if resources.mpi else ""
        ),
    shell:
        "onnes dft run --candidates {input.candidates:q} --slot {wildcards.slot} {params.cp2k_data} {params.launcher}"
        " {params.local_hull} --work-root {params.work_root:q} --out {output:q} --settings {params.settings} > {log:q} 2>&1"


rule dft_gather:
    input:
        candidates=f"{RESULTS}/dft/{{rnd}}candidates.parquet",
        results=dft_results,
        references=lambda wildcards: f"{RESULTS}/screen/{wildcards.rnd}hull_references.parquet",
        elements=f"{CACHE}/{ELEMENT_REFERENCE_FILE}",
    output:
        f"{RESULTS}/dft/{{rnd}}dft.parquet",
    log:
        f"{RESULTS}/logs/dft/{{rnd}}gather.log",
    localrule: True
    conda:
        "../envs/dft.yaml"
    shell:
        "onnes dft gather --candidates {input.candidates:q} --results {input.results:q}"
        " --references {input.references:q} --elements {input.elements:q} --out {output:q}"
        " > {log:q} 2>&1"
