#!/usr/bin/env bash
# Installs the onnes package (without dependencies: the environment file lists them) into
# the conda environment Snakemake has just created. Each envs/<name>.post-deploy.sh runs
# this; Snakemake copies the post-deploy script before running it, so the package's
# location comes from ONNES_SOURCE, which the Snakefile sets to the workflow directory.
set -euo pipefail
: "${ONNES_SOURCE:?ONNES_SOURCE is unset: run the workflow through its Snakefile}"
python -m pip install --no-deps "$ONNES_SOURCE"
