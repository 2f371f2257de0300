"""Every exception the package defines derives from CaisseApError: a POS project can
catch the library's errors, all of them and nothing else, with one except clause."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import caisse_ap
from caisse_ap.errors import CaisseApError


def test_every_exception_of_the_package_is_a_caisse_ap_error():
    defined = []
    for info in pkgutil.walk_packages(caisse_ap.__path__, "caisse_ap."):
        if info.name == "caisse_ap.pytest_plugin":
            continue  # a pytest plugin: imports pytest, defines no exception
        module = importlib.import_module(info.name)
        defined += [value for _, value in inspect.getmembers(module, inspect.isclass)
                    if issubclass(value, BaseException) and value.__module__ == info.name]
    assert len(defined) >= 15  # the walk found the package's exceptions
    assert [error.__qualname__ for error in defined
            if not issubclass(error, CaisseApError)] == []
