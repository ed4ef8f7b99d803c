import pytest

from workbench.errors import WorkbenchError
from workbench.registry import Registry


def test_register_lookup_and_order():
    reg: Registry = Registry("toy method")

    @reg.register("b")
    class B:
        pass

    reg.register("a", len)
    assert reg["b"] is B and reg.get("a") is len
    assert reg.names() == ("b", "a") and list(reg) == ["b", "a"] and len(reg) == 2
    assert "a" in reg and "c" not in reg


def test_unknown_name_is_one_line_with_suggestion():
    reg: Registry = Registry("toy method")
    reg.register("opd-da", 1)
    with pytest.raises(WorkbenchError, match=r"unknown toy method 'opd-d' \(did you mean 'opd-da'\?\); valid: opd-da"):
        reg["opd-d"]


def test_double_registration_refused():
    reg: Registry = Registry("toy method")
    reg.register("x", 1)
    reg.register("x", 1)  # same object again: harmless (module re-import)
    with pytest.raises(ValueError, match="registered twice"):
        reg.register("x", 2)


def test_lazy_modules_are_imported_on_first_lookup():
    reg: Registry = Registry("toy method", modules=["json"])
    assert not reg._loaded
    assert reg.names() == ()
    assert reg._loaded
