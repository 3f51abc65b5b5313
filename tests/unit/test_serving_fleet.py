"""The fleet model's pure parts: instance types, descriptions, health views, new instances."""

from __future__ import annotations

from pathlib import Path

import pytest

from opensage.compute import instances
from opensage.serving.fleet import (
    INSTANCE_TYPE_EXAMPLES,
    Fleet,
    FleetError,
    Instance,
    InstanceHealth,
    ServerTemplate,
    Variant,
    fleet_fields,
    instance_type,
    new_instance,
    unknown_instance_type,
    variant_description,
    variant_health,
)
from opensage.serving.health import last_lines


def _template(base: Path, variant: str = "AllTraffic", isolated: bool = False) -> ServerTemplate:
    itype = instances.lookup("ml.m5.large")
    assert itype is not None
    return ServerTemplate("ep", variant, "m", "img:1", itype, ("python",), {}, base, isolated)


def test_the_hint_names_only_types_opensage_knows() -> None:
    assert all(instances.lookup(name) is not None for name in INSTANCE_TYPE_EXAMPLES)
    message = unknown_instance_type("ml.nope.large")
    assert "'ml.nope.large'" in message and "ml.m5.large" in message and "local" in message


@pytest.mark.parametrize("name", ["ml.nope.large", "ml.m5.huge", "m5.large", ""])
def test_an_unknown_instance_type_fails_naming_it_and_the_variant(name: str) -> None:
    with pytest.raises(FleetError) as caught:
        instance_type(name, "Blue")
    assert f"'{name}'" in str(caught.value) and "Variant Blue" in str(caught.value)


def test_a_known_instance_type_is_looked_up() -> None:
    assert instance_type("ml.c5.xlarge", "A").vcpus == 4


def test_new_instances_get_a_socket_in_a_private_directory(tmp_path: Path) -> None:
    import os
    import stat

    plain = new_instance(_template(tmp_path), 2)
    assert plain.host == "AllTraffic-2" and plain.socket is not None and plain.socket.endswith(".sock")
    assert plain.log_path == tmp_path / "instance-2.log"
    isolated = new_instance(_template(tmp_path, isolated=True), 1)
    assert isolated.port == 0 and isolated.socket is not None and isolated.socket != plain.socket
    for instance in (plain, isolated):
        assert instance.socket is not None
        directory = Path(instance.socket).parent
        assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
        directory.rmdir()


def test_descriptions_and_health_follow_the_instances_in_place(tmp_path: Path) -> None:
    template = _template(tmp_path, "A")
    a = Variant("A", 2.0, template, [Instance("A-1", 9001, tmp_path / "1.log", handle={"id": 1}, healthy=True)])
    fleet = Fleet("cfg", {"A": a}, tmp_path)
    assert variant_description(a, 5.0) == {
        "VariantName": "A",
        "DeployedImages": [{"SpecifiedImage": "img:1", "ResolvedImage": "img:1", "ResolutionTime": 5.0}],
        "CurrentWeight": 2.0,
        "DesiredWeight": 2.0,
        "CurrentInstanceCount": 1,
        "DesiredInstanceCount": 1,
    }
    a.instances.append(Instance("A-2", 9002, tmp_path / "2.log", outstanding=3))
    fields = fleet_fields(fleet, 6.0)
    assert fields["ProductionVariants"][0]["CurrentInstanceCount"] == 2
    assert fields["_Handles"] == [{"id": 1}]  # the instance not started yet has none
    assert variant_health(fleet) == {"A": [InstanceHealth(1, 9001, True, 0), InstanceHealth(2, 9002, False, 3)]}
    assert fleet.instances() == a.instances


def test_last_lines_of_a_log(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    assert last_lines(log, 3) == "(no output)"
    log.write_text("one\n\ntwo\nthree\nfour\n")
    assert last_lines(log, 3) == "two | three | four"
