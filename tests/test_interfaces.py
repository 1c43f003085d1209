"""
Every class under C{srp} that declares an srp interface implements all of
it: found by walking the package, so that a new implementation is checked
without being listed here.  (Instances are checked with C{verifyObject} in
the tests of each part.)
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest
from zope.interface import Interface, implementedBy
from zope.interface.interface import InterfaceClass
from zope.interface.verify import verifyClass

import srp


def srpModules() -> list[str]:
    return sorted(info.name for info in pkgutil.walk_packages(srp.__path__, "srp."))


def srpInterfaces() -> set[InterfaceClass]:
    found = set()
    for name in srpModules():
        for value in vars(importlib.import_module(name)).values():
            if (isinstance(value, InterfaceClass) and value is not Interface
                    and value.__module__.startswith("srp.")):
                found.add(value)
    return found


def implementations() -> list[tuple[type, InterfaceClass]]:
    interfaces = srpInterfaces()
    pairs = set()
    for name in srpModules():
        for cls in vars(importlib.import_module(name)).values():
            if inspect.isclass(cls) and cls.__module__.startswith("srp."):
                for interface in implementedBy(cls).flattened():
                    if interface in interfaces:
                        pairs.add((cls, interface))
    return sorted(pairs, key=lambda pair: (pair[0].__module__, pair[0].__qualname__,
                                           pair[1].__name__))


IMPLEMENTATIONS = implementations()


def test_every_srp_interface_has_an_implementation_in_srp() -> None:
    implemented = {interface for _, interface in IMPLEMENTATIONS}
    # Applications' protocols implement IMessageReceiver (via's message
    # boundaries); tests/test_via.py checks one.
    assert {i.__name__ for i in srpInterfaces() - implemented} == {"IMessageReceiver"}
    assert len(IMPLEMENTATIONS) >= 25


@pytest.mark.parametrize(("cls", "interface"), IMPLEMENTATIONS,
                         ids=[f"{c.__module__}.{c.__qualname__}-{i.__name__}"
                              for c, i in IMPLEMENTATIONS])
def test_implementation_is_complete(cls: type, interface: InterfaceClass) -> None:
    assert verifyClass(interface, cls)
