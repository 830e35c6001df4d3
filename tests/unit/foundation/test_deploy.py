"""``make deploy`` (``stoa dev deploy``) on another cluster: image references with a registry port."""

from __future__ import annotations

import pytest

from stoa_devenv.deploy import image_sets, split_image


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("registry:5000/team/stoa:dev", ("registry:5000/team/stoa", "dev")),
        ("registry:5000/stoa", ("registry:5000/stoa", "latest")),
        ("localhost:5001/stoa:1.2.3", ("localhost:5001/stoa", "1.2.3")),
        ("ghcr.io/stoa-dev/stoa:dev", ("ghcr.io/stoa-dev/stoa", "dev")),
        ("stoa", ("stoa", "latest")),
    ],
)
def test_a_registry_port_is_not_a_tag(ref: str, expected: tuple[str, str]) -> None:
    assert split_image(ref) == expected


def test_both_images_reach_the_chart_values() -> None:
    assert image_sets("registry:5000/stoa:dev", "registry:5000/stoa-model:dev") == [
        "image.repository=registry:5000/stoa",
        "image.tag=dev",
        "bundled.model.image.repository=registry:5000/stoa-model",
        "bundled.model.image.tag=dev",
    ]
