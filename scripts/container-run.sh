#!/usr/bin/env bash
# Run a command inside a kd-bench image with the host's runs folder mounted at /app/runs and the data folder
# (if any) read-only at /data. Used by `make docker-<verb>`; the arguments are the image and the command.
# Environment: CONTAINER_ENGINE (docker|podman, may carry global flags, e.g. "podman --runtime runc"),
# HOST_RUNS, HOST_DATA, RUN_FLAGS (extra flags for `run`), GPUS (auto|all|none: whether to ask for the GPUs).
set -euo pipefail
if [ $# -lt 2 ]; then
    echo "usage: $0 IMAGE COMMAND..." >&2
    exit 2
fi
image=$1; shift
read -r -a engine <<< "${CONTAINER_ENGINE:-docker}"
engine_name=$(basename "${engine[0]}")
read -r -a extra <<< "${RUN_FLAGS:-}"
runs=${HOST_RUNS:-$PWD/runs}
mkdir -p "$runs"
runs=$(cd "$runs" && pwd)
flags=(--rm -v "$runs:/app/runs")

# Who writes the results. A non-root user gets the files as their own (--user, and keep-id for rootless
# podman). Run as root, the container keeps the image's non-root user (uid 10001), and the runs folder is
# handed to that uid (podman's :U does it; docker has no such option, so chown it).
if [ "$(id -u)" != 0 ]; then
    flags+=(--user "$(id -u):$(id -g)")
    if [ "$engine_name" = podman ]; then flags+=(--userns=keep-id); fi
elif [ "$engine_name" = podman ]; then
    flags[2]="$runs:/app/runs:U"
else
    chown -R 10001:10001 "$runs"
fi

if [ -n "${HOST_DATA:-}" ] && [ -d "$HOST_DATA" ]; then
    flags+=(-v "$(cd "$HOST_DATA" && pwd):/data:ro")
    if [ -d "$HOST_DATA/ag_news" ]; then flags+=(-e KD_DATA=/data/ag_news); fi
fi
# the hub settings of the host, when set
for var in HF_HUB_OFFLINE HF_DATASETS_OFFLINE HF_TOKEN; do
    if [ -n "${!var:-}" ]; then flags+=(-e "$var"); fi
done
# The CUDA image sees the GPUs (--gpus for docker, the CDI device for podman) where the host has an NVIDIA
# device: both engines refuse to start a container that asks for GPUs on a machine without one, and the image
# also runs on the CPU. GPUS=all or GPUS=none overrides the guess (e.g. for a remote docker daemon).
gpus=${GPUS:-auto}
if [ "$gpus" = auto ]; then
    gpus=none
    if [[ $image == *:cuda ]]; then
        if [ -e /dev/nvidiactl ]; then gpus=all; else echo "$0: no NVIDIA device on this host: $image runs on the CPU" >&2; fi
    fi
fi
case $gpus in
    all) if [ "$engine_name" = podman ]; then flags+=(--device nvidia.com/gpu=all); else flags+=(--gpus all); fi ;;
    none) ;;
    *) echo "$0: GPUS=$gpus: expected auto, all or none" >&2; exit 2 ;;
esac
exec "${engine[@]}" run "${flags[@]}" "${extra[@]}" "$image" "$@"
