"""Generic resources' pure core: a node's advertisement, fit, the ids given, the environment."""

from __future__ import annotations

from collections import Counter

import pytest

from swarmlet.errors import UsageError
from swarmlet.state.generic_resources import (
    MAX_ADVERTISED,
    advertised_text,
    claim,
    environment,
    parse_advertised,
    shortage,
)
from swarmlet.state.model import GenericResource, NamedResource, Resources

GPU = Resources(named=(NamedResource("gpu", "g1"), NamedResource("gpu", "g2")))


@pytest.mark.parametrize(
    ("texts", "expected"),
    [
        (
            ["gpu=UUID1", "gpu=UUID2"],
            Resources(named=(NamedResource("gpu", "UUID1"), NamedResource("gpu", "UUID2"))),
        ),
        (["ssd=3"], Resources(generic=(GenericResource("ssd", 3),))),
        (["gpu=g1,g2"], GPU),  # an item without "=" names one more of the kind before it
        (
            ["gpu=g1,ssd=3", "gpu=g2"],
            Resources(generic=(GenericResource("ssd", 3),), named=GPU.named),
        ),
        (
            [" ssd = 3 ", "fpga=f0"],
            Resources(generic=(GenericResource("ssd", 3),), named=(NamedResource("fpga", "f0"),)),
        ),
        ([], Resources()),
    ],
)
def test_a_node_advertises_named_ids_and_discrete_counts(
    texts: list[str], expected: Resources
) -> None:
    assert parse_advertised(texts) == expected


@pytest.mark.parametrize(
    ("texts", "message"),
    [
        (["gpu"], "invalid 'gpu': expected KIND=COUNT"),
        (["=3"], "expected KIND=COUNT"),
        (["gpu="], "expected KIND=COUNT"),
        (["gpu=g1,"], "expected KIND=COUNT"),
        (["ssd=3,4"], "expected KIND=COUNT"),  # a count names nothing more
        (["gpu=g1,7"], "expected KIND=COUNT"),
        (["gpu=g1", "gpu=2"], "gpu is given both as a count and by name"),
        (["ssd=1", "ssd=2"], "discrete resource ssd is given twice"),
        (["gpu=g1", "gpu=g1"], "gpu=g1 is given twice"),
        ([f"gpu={'x' * 129}"], "at most 128 characters"),
        ([",".join(f"k{i}=1" for i in range(MAX_ADVERTISED + 1))], "more than 256"),
    ],
)
def test_a_malformed_advertisement_is_refused_saying_why(texts: list[str], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_advertised(texts, flag="--generic-resource")


def test_the_advertisement_reads_back_as_written() -> None:
    parsed = parse_advertised(["gpu=g1", "ssd=3", "gpu=g2"])
    assert advertised_text(parsed) == ["ssd=3", "gpu=g1", "gpu=g2"]
    assert parse_advertised(advertised_text(parsed)) == parsed


def test_fit_counts_free_ids_and_free_counts() -> None:
    node = Resources(generic=(GenericResource("ssd", 3),), named=GPU.named)
    none: Counter[NamedResource] = Counter()
    assert shortage(node, (GenericResource("gpu", 2), GenericResource("ssd", 3)), {}, none) is None
    assert shortage(node, (GenericResource("gpu", 3),), {}, none) == "gpu"
    assert shortage(node, (GenericResource("ssd", 2),), {"ssd": 2}, none) == "ssd"
    held = Counter({NamedResource("gpu", "g1"): 1})
    assert shortage(node, (GenericResource("gpu", 1),), {}, held) is None
    assert shortage(node, (GenericResource("gpu", 2),), {}, held) == "gpu"
    # a kind the node does not advertise is one it has none of
    assert shortage(node, (GenericResource("fpga", 1),), {}, none) == "fpga"
    assert shortage(Resources(), (), {}, none) is None


def test_a_task_gets_the_lowest_free_ids_never_held_ones() -> None:
    node = Resources(named=(*GPU.named, NamedResource("gpu", "g3")))
    held = Counter({NamedResource("gpu", "g1"): 1})
    assert claim(node, (GenericResource("gpu", 2),), held) == (
        NamedResource("gpu", "g2"),
        NamedResource("gpu", "g3"),
    )
    # a discrete kind gets no ids
    assert (
        claim(Resources(generic=(GenericResource("ssd", 3),)), (GenericResource("ssd", 1),), held)
        == ()
    )


def test_environment_is_swarmkits_ids_for_named_and_count_for_discrete() -> None:
    reserved = (GenericResource("gpu", 2), GenericResource("ssd", 3))
    given = (NamedResource("gpu", "g1"), NamedResource("gpu", "g2"))
    assert environment(reserved, given) == {
        "DOCKER_RESOURCE_GPU": "g1,g2",
        "DOCKER_RESOURCE_SSD": "3",
    }
    assert environment((), ()) == {}
