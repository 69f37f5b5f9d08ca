"""The container plumbing that runs without an engine: the Makefile's image mode, the flags that
scripts/container-run.sh gives docker and podman, and the one list of versions the Dockerfiles install."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def make_dry(*args: str, **env: str) -> str:
    out = subprocess.run(["make", "--no-print-directory", "-n", *args], cwd=REPO, capture_output=True, text=True,
                         env={**os.environ, **env}, check=True)
    return out.stdout


def test_image_mode_runs_the_baked_environment_without_setup():
    inside = make_dry("train-all", "PRESET=smoke", KD_IMAGE="1", VENV="/opt/venv")
    assert " ".join(inside.split()) == "/opt/venv/bin/kd train-all --preset smoke"
    outside = make_dry("-B", "train-all", "PRESET=smoke")
    assert "pip install" in outside and ".venv/bin/kd train-all --preset smoke" in outside


def test_docker_verbs_pass_the_settings_into_the_container():
    out = make_dry("docker-bench", "PRESET=smoke", "RUN=runs/x", "BENCH_ARGS=--bench-samples 100",
                   "CONTAINER_ENGINE=podman", "IMAGE=cuda")
    assert "scripts/container-run.sh kd-bench:cuda make bench PRESET=smoke RUN=runs/x" in out
    assert "'BENCH_ARGS=--bench-samples 100'" in out
    # the data folder mounted: the one above $KD_DATA (the tests' own data), which holds ag_news/
    mounted = make_dry("docker-bench", "CONTAINER_ENGINE=podman", KD_DATA="/somewhere/data/ag_news")
    assert 'HOST_DATA="/somewhere/data/"' in mounted


def test_data_reaches_kd_as_one_argument_taken_as_written():
    out = make_dry("train-all", "PRESET=smoke", "DATA=/data/my #set", KD_IMAGE="1", VENV="/opt/venv")
    assert "--data '/data/my #set'" in out


@pytest.fixture
def fake_engines(tmp_path):
    """docker and podman stand-ins that print the arguments they were called with, one per line."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("docker", "podman"):
        script = bin_dir / name
        script.write_text('#!/bin/sh\nfor a in "$@"; do echo "$a"; done\n')
        script.chmod(0o755)
    return bin_dir


def run_script(fake_engines, tmp_path, engine, image, data=True, gpus=None, check=True):
    runs = tmp_path / "runs"
    data_dir = tmp_path / "data"
    if data:
        (data_dir / "ag_news").mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PATH": f"{fake_engines}:{os.environ['PATH']}", "CONTAINER_ENGINE": engine,
           "HOST_RUNS": str(runs), "HOST_DATA": str(data_dir), "RUN_FLAGS": "--network none",
           "HF_HUB_OFFLINE": "1"}
    env.pop("GPUS", None)
    if gpus is not None:
        env["GPUS"] = gpus
    out = subprocess.run([str(REPO / "scripts" / "container-run.sh"), image, "make", "bench"], env=env,
                         capture_output=True, text=True, check=check)
    return (out if not check else out.stdout.splitlines()), runs


def test_container_run_mounts_runs_and_data_and_passes_hub_settings(fake_engines, tmp_path):
    args, runs = run_script(fake_engines, tmp_path, "podman --runtime runc", "kd-bench:cpu")
    assert args[:3] == ["--runtime", "runc", "run"]
    assert any(a.startswith(f"{runs}:/app/runs") for a in args)
    assert f"{tmp_path / 'data'}:/data:ro" in args
    assert "KD_DATA=/data/ag_news" in args and "HF_HUB_OFFLINE" in args
    assert args[args.index("kd-bench:cpu"):] == ["kd-bench:cpu", "make", "bench"]  # image, then the command
    assert args[args.index("kd-bench:cpu") - 2:args.index("kd-bench:cpu")] == ["--network", "none"]
    assert "--gpus" not in args and "--device" not in args
    if os.getuid() == 0:  # root: the image's own non-root user, the folder handed to it by podman's :U
        assert f"{runs}:/app/runs:U" in args and "--user" not in args
    else:  # a user: the files are theirs
        assert f"{os.getuid()}:{os.getgid()}" in args and "--userns=keep-id" in args


def test_container_run_gives_the_cuda_image_the_gpus(fake_engines, tmp_path):
    docker, _ = run_script(fake_engines, tmp_path, "docker", "kd-bench:cuda", data=False, gpus="all")
    assert docker[docker.index("--gpus") + 1] == "all"
    assert not any(a.endswith(":/data:ro") for a in docker) and "KD_DATA=/data/ag_news" not in docker
    podman, _ = run_script(fake_engines, tmp_path, "podman", "kd-bench:cuda", gpus="all")
    assert podman[podman.index("--device") + 1] == "nvidia.com/gpu=all"


def test_container_run_asks_for_gpus_only_where_the_host_has_one(fake_engines, tmp_path):
    """Both engines refuse a container that asks for GPUs on a host without one; the CUDA image then runs on the
    CPU. GPUS=none keeps them away on any host; a value that is not auto, all or none is refused."""
    has_gpu = Path("/dev/nvidiactl").exists()
    for engine in ("docker", "podman"):
        args, _ = run_script(fake_engines, tmp_path, engine, "kd-bench:cuda")
        assert ("--gpus" in args or "--device" in args) == has_gpu, engine
        args, _ = run_script(fake_engines, tmp_path, engine, "kd-bench:cuda", gpus="none")
        assert "--gpus" not in args and "--device" not in args, engine
    bad, _ = run_script(fake_engines, tmp_path, "docker", "kd-bench:cuda", gpus="yes", check=False)
    assert bad.returncode == 2 and "GPUS=yes: expected auto, all or none" in bad.stderr and bad.stdout == ""


def test_dockerfiles_take_versions_from_requirements_only():
    """One list of versions: no package pinned in a Dockerfile, both install requirements.txt, and the CUDA
    image swaps onnxruntime for the onnxruntime-gpu pin of requirements.txt's `# cuda image:` line."""
    for name in ("Dockerfile.cpu", "Dockerfile.cuda"):
        text = (REPO / name).read_text()
        assert not re.search(r"pip install[^\n]*\b[\w-]+==\d", text), name
        assert "requirements.txt" in text and "USER 10001:10001" in text, name
    cuda = (REPO / "Dockerfile.cuda").read_text()
    assert "s/^# cuda image: (onnxruntime-gpu==[^ ]+).*/\\1/p" in cuda and "grep -vE '^onnxruntime=='" in cuda
    requirements = (REPO / "requirements.txt").read_text()
    assert re.search(r"^onnxruntime==\d", requirements, re.M)
    assert len(re.findall(r"^# cuda image: onnxruntime-gpu==\d[\w.]*\s", requirements, re.M)) == 1


def test_cuda_image_takes_torch_from_pypi_not_a_local_wheel_folder():
    """PyPI's torch is the CUDA build; the machines' pip find-links folder holds its CPU build of the same
    version, so the CUDA image neither takes nor is given one, and its build checks what it got."""
    cuda = (REPO / "Dockerfile.cuda").read_text()
    assert re.search(r"^ARG TORCH_INDEX_URL=$", cuda, re.M)
    assert not re.search(r"^ARG PIP_FIND_LINKS", cuda, re.M)
    assert "assert torch.version.cuda" in cuda and "'CUDAExecutionProvider' in" in cuda
    ci = (REPO / ".ci" / "container").read_text()
    assert '[ "$image" = cpu ] && [ -n "${PIP_FIND_LINKS:-}" ]' in ci


def test_cuda_image_record_is_of_the_inputs_and_not_of_itself(tmp_path):
    """CI rebuilds the CUDA image when .ci/cuda-image's hash of its inputs differs from the committed record's:
    the hash changes with each input and not with the record."""
    def inputs_hash(root: Path) -> str:
        out = subprocess.run(["bash", str(root / ".ci" / "cuda-image"), "hash"], capture_output=True, text=True,
                             check=True)
        return out.stdout.strip()

    root = tmp_path / "repo"
    # the inputs as the script names them (one list, there)
    inputs = re.search(r"^inputs=\(([^)]*)\)", (REPO / ".ci/cuda-image").read_text(), re.MULTILINE)[1].split()
    assert {"Dockerfile.cuda", "requirements.txt", "requirements-ray.txt"} <= set(inputs)
    for path in inputs:
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes((REPO / path).read_bytes())
    before = inputs_hash(root)
    assert re.fullmatch(r"[0-9a-f]{64}", before)
    (root / ".ci" / "cuda-image.json").write_text("{}")
    assert inputs_hash(root) == before
    with (root / "requirements.txt").open("a") as f:
        f.write("# a change\n")
    assert inputs_hash(root) != before


def test_the_images_copy_every_package_of_the_project():
    """A package left out of a Dockerfile (or of .dockerignore's allow list) installs and then fails to import."""
    import tomllib

    included = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    packages = [p.rstrip("*") for p in included["include"]]
    assert {"kd", "cli", "engines", "export", "bench"} <= set(packages)
    allowed = (REPO / ".dockerignore").read_text().splitlines()
    for package in packages:
        assert f"!{package}" in allowed, package
        for name in ("Dockerfile.cpu", "Dockerfile.cuda"):
            assert f"COPY {package} {package}" in (REPO / name).read_text().splitlines(), (name, package)
