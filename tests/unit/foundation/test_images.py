"""The pure parts of the image tooling: what Docker sends, cache keys, build order, CA extras, wheel tags."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from stoa_devenv import dockerignore
from stoa_devenv.certs import extra_certificates, to_pem
from stoa_devenv.imagecli import parse_tags
from stoa_devenv.imageload import cached_refs, config_digest, parse_image_list, stale_refs
from stoa_devenv.images import ImageRef, cached_image, context_digests, stale_archives
from stoa_devenv.imagespec import (
    SPECS,
    BaseSpec,
    DockerfileSpec,
    FileDigest,
    build_levels,
    build_order,
    chart_image_values,
    image_ref,
    input_key,
)
from stoa_devenv.llamawheel import llama_cmake_args, wheel_fits
from tests.unit.chart.helm import REPO_ROOT, find, render
from tests.unit.chart.test_image import parse_dockerfile


# ---- .dockerignore --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("rules", "path", "excluded"),
    [
        ("*", "README.md", True),
        ("*\n!README.md", "README.md", False),
        ("*\n!agents/", "agents/stoa_cli/main.py", False),  # a directory rule covers what is below it
        ("*\n!agents/\n**/__pycache__", "agents/x/__pycache__/m.cpython-311.pyc", True),
        ("**/*.pyc", "a.pyc", True),  # `**/` also matches no directory at all
        ("**/*.pyc", "a/b/c.pyc", True),
        ("*.pyc", "a/b.pyc", False),  # `*` never crosses `/`
        ("docs/?.md", "docs/a.md", True),
        ("docs/?.md", "docs/ab.md", False),
        ("[ab].txt", "b.txt", True),
        ("# a comment\n\n/README.md", "README.md", True),  # leading slash, comments, blank lines
        ("!README.md\n*", "README.md", True),  # the last matching rule wins
    ],
)
def test_dockerignore_rules(rules: str, path: str, excluded: bool) -> None:
    assert dockerignore.excluded(path, dockerignore.parse(rules)) is excluded


def _tracked(*prefixes: str) -> set[str]:
    out = subprocess.run(
        ["git", "ls-files", "--", *prefixes], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    ).stdout
    return {line for line in out.splitlines() if line}


def test_the_repo_context_is_what_the_dockerfile_copies() -> None:
    """Every tracked file of agents/ and operator/, pyproject.toml, README.md; no caches, tests or venv."""
    rules = dockerignore.parse((REPO_ROOT / ".dockerignore").read_text())
    sent = set(dockerignore.context_files(REPO_ROOT, rules))
    tracked = _tracked("agents", "operator", "pyproject.toml", "README.md")
    assert tracked <= sent
    assert {p.split("/")[0] for p in sent} == {"agents", "operator", "pyproject.toml", "README.md"}
    assert not [p for p in sent if "__pycache__" in p or p.endswith(".pyc") or ".egg-info" in p]


def test_context_digests_follow_content_and_the_executable_bit(tmp_path: Path) -> None:
    spec = DockerfileSpec("x", str(tmp_path), str(tmp_path / "Dockerfile"))
    (tmp_path / "entrypoint.sh").write_text("#!/bin/sh\n")
    (tmp_path / ".dockerignore").write_text("*.log\n")
    (tmp_path / "build.log").write_text("ignored")
    before = context_digests(spec, root=Path("/"))
    assert [d.path for d in before] == [".dockerignore", "entrypoint.sh"]
    (tmp_path / "entrypoint.sh").chmod(0o700)
    after = context_digests(spec, root=Path("/"))
    assert input_key(spec, b"", before) != input_key(spec, b"", after)


# ---- specs, keys, order -----------------------------------------------------------------------------------
def test_bases_come_before_the_images_built_on_them() -> None:
    order = build_order(["stoa", "rabbitmq", "pause", "stoa-model"])
    assert order.index("python-base") < order.index("stoa") < order.index("stoa-model")
    assert order.index("debian-base") < order.index("rabbitmq")
    assert len(order) == len(set(order))
    with pytest.raises(ValueError, match="unknown image 'nginx'"):
        build_order(["nginx"])
    cyclic = {
        "a": DockerfileSpec("a", ".", "D", bases={"B": "b"}),
        "b": DockerfileSpec("b", ".", "D", bases={"A": "a"}),
    }
    with pytest.raises(ValueError, match="cycle"):
        build_order(["a"], cyclic)


def test_build_levels_put_each_image_above_its_bases() -> None:
    assert build_levels(["stoa", "rabbitmq", "pause", "stoa-model"]) == [
        ["python-base", "debian-base"],
        ["stoa", "rabbitmq", "pause", "stoa-model"],
    ]
    assert build_levels(["debian-base"]) == [["debian-base"]]


def test_input_key_changes_with_every_input_and_only_with_them() -> None:
    spec = SPECS["stoa"]
    files = [FileDigest("a.py", "1" * 64, False), FileDigest("b.py", "2" * 64, False)]
    key = input_key(spec, b"FROM x", files, {"PYTHON_IMAGE": "sha256:aa"})
    assert key == input_key(spec, b"FROM x", list(reversed(files)), {"PYTHON_IMAGE": "sha256:aa"})
    changed = [
        input_key(spec, b"FROM y", files, {"PYTHON_IMAGE": "sha256:aa"}),
        input_key(
            spec, b"FROM x", [*files[:1], FileDigest("b.py", "3" * 64, False)], {"PYTHON_IMAGE": "sha256:aa"}
        ),
        input_key(
            spec, b"FROM x", [*files[:1], FileDigest("b.py", "2" * 64, True)], {"PYTHON_IMAGE": "sha256:aa"}
        ),
        input_key(spec, b"FROM x", files[:1], {"PYTHON_IMAGE": "sha256:aa"}),
        input_key(spec, b"FROM x", files, {"PYTHON_IMAGE": "sha256:bb"}),
        input_key(spec, b"FROM x", files, {"PYTHON_IMAGE": "sha256:aa"}, wheel_sha256="c" * 64),
        input_key(SPECS["stoa-model"], b"FROM x", files, {"PYTHON_IMAGE": "sha256:aa"}),
    ]
    assert len({key, *changed}) == len(changed) + 1
    base = SPECS["python-base"]
    assert isinstance(base, BaseSpec)
    assert input_key(base) != input_key(BaseSpec(base.name, (*base.packages, "curl"), base.cmd))


def test_image_refs_are_local_names_tagged_with_the_key() -> None:
    key = "0123456789abcdef" * 4
    assert image_ref("stoa", key) == "stoa.local/stoa:0123456789abcdef"


def test_every_dockerfile_spec_declares_and_uses_its_base_arguments() -> None:
    for spec in SPECS.values():
        if not isinstance(spec, DockerfileSpec):
            continue
        text = (REPO_ROOT / spec.dockerfile).read_text()
        assert (REPO_ROOT / spec.context).is_dir()
        before_first_from = text[: re.search(r"^FROM ", text, re.MULTILINE).start()]  # type: ignore[union-attr]
        for arg, base in spec.bases.items():
            assert isinstance(SPECS.get(base), BaseSpec)
            assert re.search(rf"^ARG {arg}=", before_first_from, re.MULTILINE), (spec.name, arg)
            assert re.search(rf"^FROM \${{{arg}}}", text, re.MULTILINE), (spec.name, arg)
        if spec.target:
            assert re.search(rf"^FROM \S+ AS {spec.target}$", text, re.MULTILINE)


def test_bases_are_slim_debian_without_usrmerge_or_docs() -> None:
    for name in ("python-base", "debian-base"):
        spec = SPECS[name]
        assert isinstance(spec, BaseSpec)
        args = spec.mmdebstrap_args()
        assert args[0] == "mmdebstrap"
        assert args[-2:] == ["bookworm", "-"]  # a tarball on stdout, for `docker import -`
        assert "--variant=minbase" in args
        assert "--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr" in args  # no usrmerge, no perl
        assert any(c.startswith("ENV PATH=") for c in spec.import_changes())  # docker import sets none
    python = SPECS["python-base"]
    assert isinstance(python, BaseSpec)
    assert {"python3", "python3-venv", "python-is-python3", "ca-certificates"} <= set(python.packages)


def test_chart_values_point_the_chart_at_the_images() -> None:
    refs = {
        "stoa": "stoa.local/stoa:aaaa",
        "stoa-model": "stoa.local/stoa-model:bbbb",
        "rabbitmq": "stoa.local/rabbitmq:cccc",
        "postgres": "stoa.local/postgres:dddd",
        "pause": "stoa.local/pause:eeee",
    }
    values = chart_image_values(refs)
    assert values == {
        "image.repository": "stoa.local/stoa",
        "image.tag": "aaaa",
        "bundled.model.image.repository": "stoa.local/stoa-model",
        "bundled.model.image.tag": "bbbb",
        "bundled.rabbitmq.image": "stoa.local/rabbitmq:cccc",
        "bundled.postgres.image": "stoa.local/postgres:dddd",
    }
    objects = render(
        "bundled.enabled=true", *(f"{k}={v}" for k, v in values.items())
    )  # the schema accepts them
    images = {
        c["image"] for d in find(objects, "Deployment") for c in d["spec"]["template"]["spec"]["containers"]
    }
    assert images == {refs[n] for n in ("stoa", "stoa-model", "rabbitmq", "postgres")}
    pulls = {
        c["imagePullPolicy"]
        for d in find(objects, "Deployment")
        for c in d["spec"]["template"]["spec"]["containers"]
    }
    assert pulls == {"IfNotPresent"}  # local images are never pulled


# ---- the Dockerfiles ------------------------------------------------------------------------------------
def test_dockerfile_needs_no_frontend_image_from_a_registry() -> None:
    text = (REPO_ROOT / "Dockerfile").read_text()
    assert not re.search(r"^#\s*syntax\s*=", text, re.MULTILINE | re.IGNORECASE)
    assert "--mount=" not in text  # builds with the classic builder too


def test_both_build_stages_trust_extra_ca_certs_and_the_model_one_takes_a_wheel() -> None:
    stages = {s[0].args.split()[-1]: s for s in parse_dockerfile((REPO_ROOT / "Dockerfile").read_text())}
    for name in ("builder", "model-builder"):
        args = [i.args for i in stages[name] if i.keyword == "ARG"]
        assert 'EXTRA_CA_CERTS=""' in args
        runs = " ".join(i.args for i in stages[name] if i.keyword == "RUN")
        assert "/etc/pip.conf" in runs
    model_runs = " ".join(i.args for i in stages["model-builder"] if i.keyword == "RUN")
    assert 'PIP_FIND_LINKS="$LLAMA_WHEELS"' in model_runs
    assert 'PIP_ONLY_BINARY="${LLAMA_WHEELS:+llama-cpp-python}"' in model_runs  # a given wheel must be used
    for name in ("stoa", "model"):  # the CA never reaches a shipped image
        assert not [i for i in stages[name] if "EXTRA_CA_CERTS" in i.args]


def test_llama_wheel_flags_are_the_makefiles() -> None:
    stages = parse_dockerfile((REPO_ROOT / "Dockerfile").read_text())
    (builder,) = [s for s in stages if s[0].args.endswith("AS model-builder")]
    (arg,) = [i.args for i in builder if i.args.startswith("LLAMA_CMAKE_ARGS=")]
    assert json.loads(arg.partition("=")[2]) == llama_cmake_args()


def _stage_instructions(path: str) -> list[list[tuple[str, str]]]:
    return [
        [(i.keyword, i.args) for i in stage] for stage in parse_dockerfile((REPO_ROOT / path).read_text())
    ]


def test_pause_image_is_one_static_binary_from_scratch() -> None:
    *_, final = _stage_instructions("hack/images/pause/Dockerfile")
    assert final[0] == ("FROM", "scratch")
    assert ("ENTRYPOINT", '["/pause"]') in final
    assert ("USER", "65535:65535") in final
    build = " ".join(a for stage in _stage_instructions("hack/images/pause/Dockerfile") for k, a in stage)
    assert "gcc -static" in build
    source = (REPO_ROOT / "hack/images/pause/pause.c").read_text()
    for needed in ("SIGTERM", "SIGINT", "SIGCHLD", "waitpid", "pause()", "_exit(0)"):
        assert needed in source


@pytest.mark.parametrize(
    ("component", "path"), [("rabbitmq", "hack/images/rabbitmq"), ("postgres", "hack/images/postgres")]
)
def test_bundled_images_run_as_the_charts_user_on_its_port(component: str, path: str) -> None:
    """The image's USER and EXPOSE are what charts/stoa/templates/bundled.yaml runs it with."""
    objects = render("bundled.enabled=true")
    (deployment,) = [
        d
        for d in find(objects, "Deployment")
        if d["metadata"]["labels"]["app.kubernetes.io/component"] == component
    ]
    pod = deployment["spec"]["template"]["spec"]
    (final,) = _stage_instructions(f"{path}/Dockerfile")[-1:]
    user = [a for k, a in final if k == "USER"][-1]
    assert user == f"{pod['securityContext']['runAsUser']}:{pod['securityContext']['runAsGroup']}"
    exposed = {a for k, a in final if k == "EXPOSE"}
    assert {str(p["containerPort"]) for p in pod["containers"][0]["ports"]} == exposed
    env = [a for k, a in final if k == "ENV"]
    if component == "postgres":  # the readiness probe's pg_isready must resolve to the real binary
        assert any("PATH=/usr/lib/postgresql/${PG_MAJOR}/bin:" in e for e in env)


def test_postgres_entrypoint_follows_the_public_images_contract() -> None:
    script = (REPO_ROOT / "hack/images/postgres/docker-entrypoint.sh").read_text()
    for variable in ("POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB", "PGDATA"):
        assert variable in script
    assert "--pwfile=<(" in script  # the password never appears on a command line
    assert 'exec "$@"' in script  # postgres is PID 1 and gets the stop signal
    assert os.access(REPO_ROOT / "hack/images/postgres/docker-entrypoint.sh", os.X_OK)


# ---- CA certificates, wheels, ctr output, the cache -----------------------------------------------------
def test_extra_certificates_are_the_bundles_minus_the_stock_ones() -> None:
    public_a, public_b, proxy = b"public-root-a" * 20, b"public-root-b" * 20, b"corp-proxy" * 20
    bundle = to_pem(public_a) + to_pem(proxy) + to_pem(public_b) + to_pem(proxy)
    extra = extra_certificates(bundle, [to_pem(public_a), to_pem(public_b)])
    assert extra == to_pem(proxy)  # once, even when listed twice
    assert extra_certificates(to_pem(public_a), [to_pem(public_a)]) == ""
    assert base64.b64decode("".join(to_pem(proxy).splitlines()[1:-1])) == proxy


@pytest.mark.parametrize(
    ("filename", "fits"),
    [
        ("llama_cpp_python-0.3.36-cp311-cp311-linux_x86_64.whl", True),
        ("llama_cpp_python-0.3.36-py3-none-linux_x86_64.whl", True),
        ("llama_cpp_python-0.3.36-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl", True),
        ("llama_cpp_python-0.3.36-cp312-cp312-linux_x86_64.whl", False),
        ("llama_cpp_python-0.3.36-cp311-cp311-linux_aarch64.whl", False),
        ("llama_cpp_python-0.3.36-cp311-cp311-macosx_11_0_arm64.whl", False),
        ("llama_cpp_python-0.3.36.tar.gz", False),
    ],
)
def test_wheel_fits_the_images_python(filename: str, fits: bool) -> None:
    assert wheel_fits(filename, (3, 11)) is fits


STOA_DIGEST = "sha256:9f97ffa0673a00a07f8c30030768c000e5c8b9eb1bc4645b14c30726678fa9d1"
PAUSE_DIGEST = "sha256:c28f0b5788dd43749b4006d4d9745377278785c93caff90af8366978d4dcc0cb"
DOCKER_V2 = "application/vnd.docker.distribution.manifest.v2+json"
# `ctr images ls` of containerd 1.6 (columns as printed; SIZE holds a space).
CTR_LS = (
    "REF                               TYPE  DIGEST  SIZE      PLATFORMS   LABELS\n"
    f"ghcr.io/stoa-dev/stoa:dev         {DOCKER_V2} {STOA_DIGEST} 315.7 MiB linux/amd64 -\n"
    f"stoa.local/pause:9c32ce7d4c453c33 {DOCKER_V2} {PAUSE_DIGEST} 669.7 KiB linux/amd64 -\n"
)


def test_ctr_image_list_and_manifest_parsing() -> None:
    assert parse_image_list(CTR_LS) == {
        "ghcr.io/stoa-dev/stoa:dev": STOA_DIGEST,
        "stoa.local/pause:9c32ce7d4c453c33": PAUSE_DIGEST,
    }
    assert parse_image_list(CTR_LS.splitlines()[0]) == {}
    assert config_digest({"config": {"digest": "sha256:ab"}, "layers": []}) == "sha256:ab"
    assert config_digest({"manifests": [{"digest": "sha256:cd"}]}) is None  # an index names no config


def test_tags_parse_as_name_equals_ref() -> None:
    assert parse_tags(["stoa=ghcr.io/stoa-dev/stoa:dev", "stoa=x:1"]) == {
        "stoa": ["ghcr.io/stoa-dev/stoa:dev", "x:1"]
    }
    with pytest.raises(SystemExit, match="NAME=REF"):
        parse_tags(["stoa"])


def _fake_entry(cache: Path, name: str, key: str, mtime: float) -> None:
    ref = image_ref(name, key)
    archive = cache / f"{name}-{ref.rsplit(':', 1)[1]}.tar"
    archive.write_bytes(b"tar")
    meta = archive.with_suffix(".json")
    meta.write_text(
        json.dumps(
            {
                "name": name,
                "ref": ref,
                "image_id": "sha256:" + key,
                "size": 3,
                "key": key,
                "archive": str(archive),
            }
        )
    )
    os.utime(meta, (mtime, mtime))


def test_cache_serves_only_the_exact_key_and_prunes_per_image(tmp_path: Path) -> None:
    for i, key in enumerate(("a" * 64, "b" * 64, "c" * 64)):
        _fake_entry(tmp_path, "stoa", key, 1000 + i)
    _fake_entry(tmp_path, "stoa-model", "d" * 64, 5000)  # newest of all, but another image
    found = cached_image("stoa", "c" * 64, tmp_path)
    assert found == ImageRef(
        "stoa",
        "stoa.local/stoa:cccccccccccccccc",
        "sha256:" + "c" * 64,
        tmp_path / "stoa-cccccccccccccccc.tar",
        3,
    )
    assert cached_image("stoa", "e" * 64, tmp_path) is None
    assert [p.name for p in stale_archives("stoa", tmp_path, keep=2)] == ["stoa-aaaaaaaaaaaaaaaa.json"]
    assert stale_archives("stoa-model", tmp_path, keep=2) == []


def test_a_node_start_keeps_only_what_the_image_cache_holds(tmp_path: Path) -> None:
    for i, key in enumerate(("a" * 64, "c" * 64)):
        _fake_entry(tmp_path, "stoa", key, 1000 + i)
    keep = {*cached_refs(tmp_path), "stoa.local/pause:1"}
    assert keep == {
        "stoa.local/stoa:aaaaaaaaaaaaaaaa",
        "stoa.local/stoa:cccccccccccccccc",
        "stoa.local/pause:1",
    }
    present = [
        "stoa.local/stoa:0000000000000000",  # a build the cache pruned
        "stoa.local/stoa:cccccccccccccccc",
        "ghcr.io/stoa-dev/stoa:dev",  # an alias: the next load tags it again
        "stoa.local/pause:1",
    ]
    assert stale_refs(present, keep) == ["ghcr.io/stoa-dev/stoa:dev", "stoa.local/stoa:0000000000000000"]
