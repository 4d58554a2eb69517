"""The container images (workloads/<image>/Dockerfile), checked without Docker.

Docker cannot run here, so these tests check what a build and the charts depend on: every file a Dockerfile
copies exists and is in the build context (.dockerignore), each image's user is the charts' runAsUser, the
charts' default images are these images at this package's version, the images install this package with the
pins of constraints.txt (the finetune image's PyTorch included), and the entrypoints are llmft / vLLM.
"""

from __future__ import annotations

import fnmatch
import re
import shlex
import tomllib
from pathlib import Path

import pytest
import yaml
from harness import CHARTS, REPO, pod_specs, render_chart
from test_all_charts import CASES, rendered

WORKLOADS = REPO / "workloads"
IMAGES = ["staging", "finetune", "inference"]
REGISTRY = "ghcr.io/llmft"


def _version() -> str:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]


def _pins() -> dict[str, str]:
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.-]+)==([^\s;#]+)", line.strip())
        if match:
            pins[match.group(1).lower().replace("_", "-")] = match.group(2)
    return pins


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    result, pending = [], ""
    for line in dockerfile.read_text().splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        pending += (" " if pending else "") + stripped.rstrip("\\").strip()
        if stripped.endswith("\\"):
            continue
        keyword, _, rest = pending.partition(" ")
        result.append((keyword.upper(), rest.strip()))
        pending = ""
    return result


def arg_defaults(dockerfile: Path) -> dict[str, str]:
    defaults = {}
    for keyword, rest in instructions(dockerfile):
        if keyword == "ARG" and "=" in rest:
            name, _, value = rest.partition("=")
            defaults[name.strip()] = value.strip().strip('"')
    return defaults


def _expand(text: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", lambda m: args.get(m.group(1), m.group(0)), text)


def copy_sources(dockerfile: Path) -> list[str]:
    """The build-context paths every COPY/ADD reads (COPY --from=stage reads another stage, not the context)."""
    sources = []
    for keyword, rest in instructions(dockerfile):
        if keyword not in ("COPY", "ADD"):
            continue
        if rest.startswith("["):
            words = yaml.safe_load(rest)
        else:
            words = shlex.split(rest)
        if any(w.startswith("--from") for w in words):
            continue
        words = [w for w in words if not w.startswith("--")]
        sources.extend(words[:-1])
    return sources


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides (`!` re-includes)."""
    parts = Path(path.rstrip("/")).parts
    candidates = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    ignored = False
    for raw in patterns:
        negate = raw.startswith("!")
        pattern = raw[1:] if negate else raw
        pattern = pattern.strip("/")
        if any(fnmatch.fnmatchcase(c, pattern) for c in candidates):
            ignored = not negate
    return ignored


def _dockerignore() -> list[str]:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


def image_user(dockerfile: Path) -> str:
    users = [rest for keyword, rest in instructions(dockerfile) if keyword == "USER"]
    assert users, f"{dockerfile}: no USER instruction (the image would run as root)"
    return _expand(users[-1], arg_defaults(dockerfile))


@pytest.mark.parametrize("image", IMAGES)
def test_image_folder_has_dockerfile_and_readme_with_build_command(image):
    folder = WORKLOADS / image
    assert (folder / "Dockerfile").is_file()
    readme = (folder / "README.md").read_text()
    assert f"docker build -f workloads/{image}/Dockerfile" in readme
    index = (WORKLOADS / "README.md").read_text()
    assert f"docker build -f workloads/{image}/Dockerfile -t {REGISTRY}/llmft-{image}:{_version()} ." in index


@pytest.mark.parametrize("image", IMAGES)
def test_every_copied_file_exists_in_the_build_context(image):
    dockerfile = WORKLOADS / image / "Dockerfile"
    sources = copy_sources(dockerfile)
    assert sources, "the image copies nothing from this repository"
    patterns = _dockerignore()
    for source in sources:
        matches = list(REPO.glob(source.rstrip("/"))) if any(c in source for c in "*?[") else [REPO / source]
        assert matches and all(m.exists() for m in matches), f"{image}: COPY {source}: not in the repository"
        assert not dockerignored(source, patterns), f"{image}: COPY {source}: excluded by .dockerignore"
    # The package needs all of these to build (README.md is pyproject's readme).
    for needed in ("pyproject.toml", "README.md", "constraints.txt", "engine/"):
        assert needed in sources, f"{image}: does not copy {needed}"


def test_dockerignore_rule_follows_docker():
    patterns = ["*", "!engine/", "**/__pycache__"]
    assert dockerignored(".venv/bin/python", patterns)
    assert not dockerignored("engine/llmft/cli.py", patterns)
    assert dockerignored("engine/llmft/__pycache__/cli.cpython-312.pyc", patterns)
    assert not dockerignored("engine/", patterns)


@pytest.mark.parametrize("image", IMAGES)
def test_images_install_this_package_at_its_version_with_the_pins(image):
    dockerfile = WORKLOADS / image / "Dockerfile"
    assert arg_defaults(dockerfile).get("LLMFT_VERSION") == _version()
    installs = [rest for keyword, rest in instructions(dockerfile) if keyword == "RUN" and "pip install" in rest]
    assert installs, f"{image}: installs nothing"
    for run in installs:
        for command in re.findall(r"pip install[^;&|]*", run):
            assert "-c constraints.txt" in command, f"{image}: `{command.strip()}` ignores constraints.txt"


def test_finetune_image_torch_is_the_constraints_pin():
    dockerfile = WORKLOADS / "finetune" / "Dockerfile"
    args = arg_defaults(dockerfile)
    pins = _pins()
    assert args["TORCH_VERSION"] == pins["torch"]
    run = " ".join(rest for keyword, rest in instructions(dockerfile) if keyword == "RUN")
    assert '"torch==${TORCH_VERSION}"' in run and '".[train]"' in run and "deepspeed" in run


def test_finetune_image_is_cuda_by_default_and_rocm_by_build_arg():
    dockerfile = WORKLOADS / "finetune" / "Dockerfile"
    args = arg_defaults(dockerfile)
    froms = [rest for keyword, rest in instructions(dockerfile) if keyword == "FROM"]
    assert args["GPU_PLATFORM"] == "cuda"
    assert "${CUDA_IMAGE} AS base-cuda" in froms and "${ROCM_IMAGE} AS base-rocm" in froms
    assert froms[-1] == "base-${GPU_PLATFORM}"
    assert "nvidia/cuda" in args["CUDA_IMAGE"] and "rocm" in args["ROCM_IMAGE"]


def test_staging_image_has_no_pytorch():
    dockerfile = WORKLOADS / "staging" / "Dockerfile"
    run = " ".join(rest for keyword, rest in instructions(dockerfile) if keyword == "RUN")
    assert "[train]" not in run and "torch==" not in run
    assert "pip show torch" in run  # the build fails if a dependency pulls PyTorch in


def test_inference_image_is_vllm_plus_llmft():
    dockerfile = WORKLOADS / "inference" / "Dockerfile"
    args = arg_defaults(dockerfile)
    froms = [_expand(rest, args) for keyword, rest in instructions(dockerfile) if keyword == "FROM"]
    assert froms == [f"vllm/vllm-openai:v{args['VLLM_VERSION']}"]
    run = " ".join(rest for keyword, rest in instructions(dockerfile) if keyword == "RUN")
    assert "ln -s /opt/llmft/bin/llmft /usr/local/bin/llmft" in run


@pytest.mark.parametrize(
    "image, entrypoint", [("staging", ["llmft"]), ("finetune", ["llmft"]), ("inference", ["vllm", "serve"])]
)
def test_entrypoints(image, entrypoint):
    entries = [rest for keyword, rest in instructions(WORKLOADS / image / "Dockerfile") if keyword == "ENTRYPOINT"]
    assert entries and yaml.safe_load(entries[-1]) == entrypoint


@pytest.mark.parametrize("image", IMAGES)
def test_image_user_is_the_charts_run_as_user(image):
    user = image_user(WORKLOADS / image / "Dockerfile")
    uid, _, gid = user.partition(":")
    assert uid.isdigit(), f"{image}: USER {user} must be numeric for Kubernetes' runAsNonRoot check"
    run_as = set()
    for param in CASES:
        chart, file = param.values
        for _name, spec in pod_specs(rendered(chart, file)):
            context = spec.get("securityContext", {})
            for container in spec.get("initContainers", []) + spec["containers"]:
                own = container.get("securityContext", {})
                run_as.add(
                    (own.get("runAsUser", context.get("runAsUser")), own.get("runAsGroup", context.get("runAsGroup")))
                )
    assert run_as == {(int(uid), int(gid or uid))}


@pytest.mark.parametrize("image", IMAGES)
def test_image_user_is_high_and_its_home_is_the_charts_writable_home(image):
    """A UID >= 10000 (no clash with a node's users), and the folder the image works in is the one the charts
    mount writable (HOME) over its read-only root filesystem."""
    dockerfile = WORKLOADS / image / "Dockerfile"
    assert int(image_user(dockerfile).partition(":")[0]) >= 10000
    workdirs = [rest for keyword, rest in instructions(dockerfile) if keyword == "WORKDIR"]
    homes = set()
    for param in CASES:
        for _name, spec in pod_specs(rendered(*param.values)):
            for container in spec.get("initContainers", []) + spec["containers"]:
                env = {item["name"]: item.get("value") for item in container.get("env", [])}
                mounts = {mount["mountPath"] for mount in container.get("volumeMounts", [])}
                homes.add(env.get("HOME"))
                assert env.get("HOME") in mounts and "/tmp" in mounts, container["name"]
    assert homes == {workdirs[-1]}


def _default_image(chart: Path) -> dict:
    return yaml.safe_load((chart / "values.yaml").read_text())["image"]


@pytest.mark.parametrize("chart", sorted({param.values[0] for param in CASES}))  # the library chart has no image
def test_chart_default_image_is_one_of_these_images(chart):
    image = _default_image(CHARTS / chart)
    names = {f"{REGISTRY}/llmft-{name}" for name in IMAGES}
    assert image["repository"] in names
    assert str(image["tag"]) == _version()


def test_each_image_is_used_by_its_charts():
    wanted = {
        "download-model-to-bucket": "staging",
        "download-data-to-bucket": "staging",
        "llm-finetune": "finetune",
        "llm-inference-vllm": "inference",
    }
    for chart, image in wanted.items():
        assert _default_image(CHARTS / chart)["repository"] == f"{REGISTRY}/llmft-{image}", chart


def test_charts_render_with_these_images():
    rendered_chart = render_chart(
        CHARTS / "llm-inference-vllm", release_name="x", values={"model": "default-bucket/models/tiny"}
    )
    images = {
        c["image"]
        for _n, spec in pod_specs(rendered_chart)
        for c in spec.get("initContainers", []) + spec["containers"]
    }
    assert images == {f"{REGISTRY}/llmft-inference:{_version()}"}
