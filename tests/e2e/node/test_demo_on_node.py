"""The demo a ``helm install`` user runs first, on the real node with the real model image: the chart in
bundled mode with its demo model (``stoa model-server``: SmolLM2-135M on llama.cpp's server, the image of
``docker build --target model``), a chat completion through the Service ``stoa-model:8080``, then
examples/debate/ as shipped until the Conversation Succeeds — only the release namespace in its
ModelPolicy's URL differs, and the debate has 1 round instead of 8 (4 turns: the 135M model on 2 shared
cores takes ~15 s a turn under load; `make demo-kind` runs the full debate). Shape only: a 135M model's
words are nobody's contract.
"""

from __future__ import annotations

import json
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from stoa_devenv.imageload import load_into_containerd
from stoa_devenv.images import ensure_images
from tests.e2e.node.bed import Bed, wait_for
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


def _shipped_examples(release_ns: str) -> list[JSON]:
    docs: list[JSON] = []
    for path in sorted(EXAMPLES.glob("*.yaml")):
        text = path.read_text().replace("stoa-model.stoa-system.svc", f"stoa-model.{release_ns}.svc")
        docs += [d for d in yaml.safe_load_all(text) if d]
    for doc in docs:
        if doc["kind"] == "Conversation":
            doc["spec"]["maxRounds"] = 1
    return docs


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

    docs = _shipped_examples(demo.release_ns)
    demo.apply(docs)
    conversation = next(d["metadata"]["name"] for d in docs if d["kind"] == "Conversation")

    def ended() -> JSON | None:
        status: JSON = demo.cr("conversations", conversation).get("status") or {}
        return status if status.get("phase") in ("Succeeded", "Failed") else None

    status = wait_for(ended, 600, f"Conversation {conversation} to end", every=1)
    assert status["phase"] == "Succeeded", status
    turns = demo.fetch(
        "SELECT seq, speaker, content FROM stoa.turns WHERE conversation_id = $1 ORDER BY seq",
        uuid.UUID(demo.cr("conversations", conversation)["metadata"]["uid"]),
    )
    assert [int(t["seq"]) for t in turns] == list(range(1, len(turns) + 1))
    assert status["turns"] == len(turns)
    assert all(str(t["content"]).strip() for t in turns)
    print(
        f"--- demo on the node: {len(turns)} turns, {status.get('startedAt')} -> {status.get('finishedAt')}"
    )
    for turn in turns[:4]:
        print(f"  {turn['seq']:>2} {turn['speaker']}: {str(turn['content'])[:160]}")
