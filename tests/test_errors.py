"""The one exception hierarchy: every public error class lives in gateway/errors.py."""

from __future__ import annotations

import ast
from pathlib import Path

import gateway.errors
from gateway.errors import GatewayError

PACKAGE = Path(gateway.errors.__file__).parent


def error_classes_outside_errors_py() -> list[str]:
    """`file: Class` for each public class named *Error defined in a module but errors.py."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "errors.py" and path.parent == PACKAGE:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.ClassDef)
                and node.name.endswith("Error")
                and not node.name.startswith("_")
            ):
                found.append(f"{path.relative_to(PACKAGE)}: {node.name}")
    return found


def test_every_public_error_class_is_defined_in_errors_py() -> None:
    """No module but gateway/errors.py defines a public *Error class."""
    assert error_classes_outside_errors_py() == []


def test_every_error_in_errors_py_is_a_gateway_error() -> None:
    """Each exception class gateway/errors.py defines derives from GatewayError."""
    classes = [
        value
        for value in vars(gateway.errors).values()
        if isinstance(value, type)
        and issubclass(value, BaseException)
        and value.__module__ == "gateway.errors"
    ]
    assert len(classes) >= 15
    assert all(issubclass(cls, GatewayError) for cls in classes)


def test_publishing_errors_stay_importable_from_gateway_publish() -> None:
    """PayloadError and ScheduleError are the errors.py classes, still exported by publish."""
    from gateway import publish
    from gateway.errors import IdentifierError, PayloadError, PublishError, ScheduleError

    assert publish.PayloadError is PayloadError
    assert publish.ScheduleError is ScheduleError
    assert issubclass(PayloadError, PublishError) and issubclass(PayloadError, ValueError)
    assert issubclass(ScheduleError, IdentifierError)
