#!/usr/bin/env bash
# After Snakemake creates this environment: install the onnes package into it.
set -euo pipefail
exec bash "${ONNES_SOURCE:?ONNES_SOURCE is unset: run the workflow through its Snakefile}/envs/install-onnes.sh"
