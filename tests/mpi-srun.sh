#!/usr/bin/env bash
# Manual check (not CI): the MPI cases under Slurm on one node, `srun --mpi=pmix -N1 -n3 -O`.
# Needs slurmd/slurmctld running on this host with PMIx support; run from the workspace root.
# Each case prints "case NAME ok"; the script fails on the first case that does not.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --features mpi --tests
exe=$(cargo test --features mpi --test mpi --no-run --message-format=json 2>/dev/null \
  | grep -o '"executable":"[^"]*mpi-[^"]*"' | head -1 | cut -d'"' -f4)
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
for case in shapes locality crash; do
  out=$(FORKGRAPH_MPI_CASE=$case FORKGRAPH_MPI_SCRATCH=$scratch \
    timeout 300 srun --mpi=pmix -N1 -n3 -O --kill-on-bad-exit=1 "$exe")
  echo "$out" | grep -q "case $case ok" || { echo "case $case failed:"; echo "$out"; exit 1; }
  echo "srun case $case ok"
done
