"""The demo a ``helm install`` user runs first, on the real node with the real model image: the chart in
bundled mode with its demo model (``stoa model-server``: SmolLM2-135M on llama.cpp's server, the image of
``docker build --target model``), a chat completion through the Service ``stoa-model:8080``, then
``stoa dev demo`` (``make demo-kind``) twice: examples/debate/ as shipped (its ModelPolicy pointed at this
release's model) until the Conversation Succeeds, every turn printed as it is stored, and a second run that
debates again under the same name. Each run has 1 round instead of 8 (4 turns: the 135M model on 2
shared cores takes ~15 s a turn under load). Shape only: a 135M model's words are nobody's contract.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from stoa_agents.identity import archived_name
from stoa_devenv.imageload import load_into_containerd
from stoa_devenv.images import ensure_images
from tests.e2e.node.bed import Bed
from tests.e2e.node.stoa_install import EXAMPLES, Install, install

MODEL_ALIAS = "smollm2-135m"
JSON = dict[str, Any]


@pytest.fixture(scope="module")
def model_image(bed: Bed) -> dict[str, str]:
    (ref,) = ensure_images(["stoa-model"]).values()
    load_into_containerd(bed.bed.containerd_socket, [ref])
    return {**bed.images, "stoa-model": ref.ref}


@pytest.fixture(scope="module")
def demo(
    bed: Bed, model_image: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Install]:
    bed.images = model_image
    overrides: JSON = {"model": {"enabled": True}}
    yield from install(bed, tmp_path_factory.mktemp("demo"), bundled_overrides=overrides)


def _chat(url: str, body: JSON) -> JSON:
    request = urllib.request.Request(  # noqa: S310 (test bed address)
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=120) as response:  # noqa: S310 (test bed address)
        assert response.status == 200
        answer: JSON = json.loads(response.read())
    return answer


def _demo(bed: Bed, demo: Install, rounds: int) -> str:
    """``stoa dev demo`` (what ``make demo-kind`` runs) against this release; returns its output."""
    argv = [sys.executable, "-m", "stoa_cli.main", "dev", "demo", "--namespace", demo.ns,
            "--release-namespace", demo.release_ns, "--rounds", str(rounds), "--timeout", "600"]  # fmt: skip
    proc = subprocess.run(argv, env={**os.environ, "KUBECONFIG": str(bed.kubeconfig)}, capture_output=True,
                          text=True, timeout=700, check=False)  # fmt: skip
    print(proc.stdout[-3000:], proc.stderr[-2000:])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    return proc.stdout


def test_bundled_model_serves_the_shipped_debate(bed: Bed, demo: Install, tmp_path: Path) -> None:
    service = bed.get("service", "stoa-model", "-n", demo.release_ns)
    url = f"http://{service['spec']['clusterIP']}:8080/v1"
    with urllib.request.urlopen(f"{url}/models", timeout=30) as response:  # noqa: S310 (test bed address)
        assert [m["id"] for m in json.loads(response.read())["data"]] == [MODEL_ALIAS]
    answer = _chat(
        f"{url}/chat/completions",
        {
            "model": MODEL_ALIAS,
            "messages": [
                {"role": "system", "content": "You are brief."},
                {"role": "user", "content": "Say hello."},
            ],
            "max_tokens": 16,
        },
    )
    assert answer["object"] == "chat.completion"
    assert answer["choices"][0]["message"]["content"].strip()
    assert 0 < answer["usage"]["completion_tokens"] <= 16

    # `make demo-kind` twice: the shipped examples/debate/ (its ModelPolicy pointed at this release's model)
    # until the Conversation Succeeds, each turn printed as it is stored; the second run debates again.
    out = _demo(bed, demo, rounds=1)
    conversation = str(yaml.safe_load((EXAMPLES / "conversation.yaml").read_text())["metadata"]["name"])
    first = demo.cr("conversations", conversation)
    status = first["status"]
    assert status["phase"] == "Succeeded", status
    turns = demo.fetch(
        "SELECT seq, speaker, content FROM stoa.turns WHERE conversation_id = $1 ORDER BY seq",
        uuid.UUID(first["metadata"]["uid"]),
    )
    assert [int(t["seq"]) for t in turns] == list(range(1, len(turns) + 1))
    assert status["turns"] == len(turns) == 4
    assert all(str(t["content"]).strip() for t in turns)
    for turn in turns:  # followed: every stored turn was printed
        assert f"[{turn['seq']:>2}] {turn['speaker']}: " in out
    assert f"Succeeded after {len(turns)} turns" in out
    print(
        f"--- demo on the node: {len(turns)} turns, {status.get('startedAt')} -> {status.get('finishedAt')}"
    )
    for turn in turns[:4]:
        print(f"  {turn['seq']:>2} {turn['speaker']}: {str(turn['content'])[:160]}")

    again = _demo(bed, demo, rounds=1)
    kept = archived_name(f"{demo.ns}/{conversation}", first["metadata"]["uid"])
    assert f"its transcript is kept as {kept}" in again
    second = demo.cr("conversations", conversation)
    assert second["metadata"]["uid"] != first["metadata"]["uid"]
    assert second["status"]["phase"] == "Succeeded"
    assert second["status"]["turns"] == 4
    rows = demo.fetch(
        "SELECT name, turns FROM stoa.conversations WHERE id = $1", uuid.UUID(first["metadata"]["uid"])
    )
    assert [(r["name"], r["turns"]) for r in rows] == [(kept, 4)]
