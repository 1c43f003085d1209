"""The registry: several registrations per instance, best first."""

from __future__ import annotations

from attrs import evolve

from srp.records import InstanceInfo, Registration
from srp.server.registry import Registry


def reg(name: str, node: int, priority: int = 0, tcp: int = 1000,
        hidden: bool = False) -> Registration:
    return Registration(InstanceInfo("H", name, tcp=tcp), hidden=hidden, priority=priority,
                        nodeId=node)


def test_lowest_priority_then_first_arrival_wins() -> None:
    registry = Registry([reg("A", 1, priority=5), reg("A", 2, priority=0), reg("A", 3)])
    assert [r.nodeId for r in registry.candidates("a")] == [2, 3, 1]
    assert registry.lookup("A") == reg("A", 2, priority=0)


def test_reregistering_replaces_the_same_node() -> None:
    registry = Registry([reg("A", 1, tcp=1), reg("A", 2, tcp=2, priority=1)])
    registry.register(reg("A", 1, tcp=3, priority=2))
    assert [(r.nodeId, r.info.tcp) for r in registry.candidates("A")] == [(2, 2), (1, 3)]


def test_remove_node_falls_back_to_the_standby() -> None:
    registry = Registry([reg("A", 1), reg("A", 2, priority=1), reg("B", 1)])
    generation = registry.generation
    assert registry.removeNode(1) == 2
    assert registry.lookup("A") == reg("A", 2, priority=1)
    assert registry.lookup("B") is None
    assert len(registry) == 1
    assert registry.generation != generation
    assert registry.removeNode(1) == 0


def test_visible_is_the_best_of_each_unless_hidden() -> None:
    registry = Registry([reg("B", 1), reg("A", 2, hidden=True), reg("C", 1, priority=1),
                         reg("C", 2, priority=0, tcp=7)])
    assert [(r.name, r.nodeId) for r in registry.visible()] == [("B", 1), ("C", 2)]


def test_unregister_one_node() -> None:
    registry = Registry([reg("A", 1), reg("A", 2)])
    registry.unregister("a", 1)
    assert [r.nodeId for r in registry.candidates("A")] == [2]
    registry.unregister("a", 2)
    assert registry.lookup("A") is None
    assert registry.registrations() == []


def test_count_of_each_node() -> None:
    registry = Registry([reg("A", 1), reg("B", 1), reg("A", 2)])
    assert (registry.countOf(1), registry.countOf(2), registry.countOf(3)) == (2, 1, 0)
    registry.register(reg("A", 1, tcp=5))
    assert registry.countOf(1) == 2, "re-registering replaces"
    registry.unregister("B", 1)
    assert registry.countOf(1) == 1
    registry.removeNode(1)
    assert registry.countOf(1) == 0


def test_lookup_skips_registrations_that_are_down() -> None:
    primary = Registration(InstanceInfo("A", "SALES", tcp=1), priority=0, nodeId=1, down=True)
    standby = Registration(InstanceInfo("B", "SALES", tcp=2), priority=1, nodeId=2)
    registry = Registry([primary, standby])
    assert registry.lookup("sales") == standby
    assert registry.visible() == [standby]
    assert registry.candidates("SALES") == (primary, standby)


def test_all_down_answers_the_best_unless_hidden_when_down() -> None:
    primary = Registration(InstanceInfo("A", "SALES", tcp=1), priority=0, nodeId=1, down=True)
    standby = Registration(InstanceInfo("B", "SALES", tcp=2), priority=1, nodeId=2, down=True)
    assert Registry([primary, standby]).lookup("SALES") == primary
    hiding = Registration(primary.info, nodeId=1, down=True, hideWhenDown=True)
    registry = Registry([hiding])
    assert registry.lookup("SALES") is None
    assert registry.visible() == []


def test_a_registration_that_comes_back_up_answers_again() -> None:
    registry = Registry()
    primary = Registration(InstanceInfo("A", "SALES", tcp=1), priority=0, nodeId=1)
    standby = Registration(InstanceInfo("B", "SALES", tcp=2), priority=1, nodeId=2)
    registry.register(standby)
    registry.register(evolve(primary, down=True))
    generation = registry.generation
    assert registry.lookup("SALES") == standby
    registry.register(primary)
    assert registry.generation > generation
    assert registry.lookup("SALES") == primary


def test_a_changed_registration_keeps_its_place_among_equals() -> None:
    first, second = reg("A", 1), reg("A", 2)
    registry = Registry([first, second])
    registry.register(evolve(first, down=True))
    registry.register(first)
    assert [r.nodeId for r in registry.candidates("A")] == [1, 2]
    assert registry.countOf(1) == 1
