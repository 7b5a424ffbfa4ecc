# Onnes: superconductor discovery campaigns with generative crystal models.
# Run: snakemake --cores all [--configfile config/demo.yaml] [--config data_mirror=DIR]
# Architecture: docs/architecture.md (stages, the crystal-table contract, output layout).
import os

from snakemake.utils import min_version

import onnes.config

min_version("9.0")

# Where the conda environments' post-deploy scripts (envs/*.post-deploy.sh) find the
# package to install into each environment.
os.environ.setdefault("ONNES_SOURCE", workflow.basedir)


configfile: os.path.join(workflow.basedir, "config", "config.yaml")


# Defaults come from the schema; unknown keys and wrong types fail here, with a message
# naming the offending key (data.per_dataset.mp20.max_atom) where a bare JSON-schema
# error prints the whole config. (It is the schema snakemake.utils.validate would read,
# with the same defaults: a second validation would only cost every job a second.) A
# cluster job re-reads this file twice (job script and job step): it skips the sampler
# check that builds each model's processes, which imports torch and which the main
# process has run (about 2.5 s of CPU per job).
onnes.config.validate(config, samplers=workflow.is_main_process)


include: "rules/common.smk"
include: "rules/cluster.smk"
include: "rules/inputs.smk"
include: "rules/data.smk"
include: "rules/train.smk"
include: "rules/sample.smk"
include: "rules/baselines.smk"
include: "rules/candidates.smk"
include: "rules/screen.smk"
include: "rules/tc.smk"
include: "rules/dft.smk"
include: "rules/report.smk"


check_cluster_resources([r.name for r in workflow.rules])


rule all:
    default_target: True
    input:
        campaign_targets(),
