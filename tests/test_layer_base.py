"""BaseChannelLayer's contract and helpers, and the settings-driven ChannelLayerManager."""

from __future__ import annotations

import re
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.test import override_settings

from channels_runtime.exceptions import InvalidChannelLayerError
from channels_runtime.layers import (
    BaseChannelLayer,
    ChannelLayerManager,
    InMemoryChannelLayer,
    channel_layers,
    compile_capacities,
    get_channel_layer,
)

INMEMORY = "channels_runtime.layers.InMemoryChannelLayer"


class BareLayer(BaseChannelLayer):
    """Implements nothing, to see what the base class says about it."""


# -- the contract ------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("method", "args"),
    [
        ("send", ("chan", {"type": "x"})),
        ("receive", ("chan",)),
        ("new_channel", ()),
        ("flush", ()),
        ("group_add", ("group", "chan")),
        ("group_discard", ("group", "chan")),
        ("group_send", ("group", {"type": "x"})),
    ],
)
async def test_unimplemented_methods_name_class_and_method(
    method: str, args: tuple[Any, ...]
) -> None:
    with pytest.raises(NotImplementedError, match=rf"BareLayer does not implement {method}\(\)"):
        await getattr(BareLayer(), method)(*args)


@pytest.mark.anyio
async def test_close_does_nothing_by_default() -> None:
    layer = BareLayer()
    await layer.close()
    await layer.close()  # twice is fine too


def test_init_validates_numbers() -> None:
    layer = BareLayer(expiry=5, capacity=7, channel_capacity={"a.*": 2})
    assert (layer.expiry, layer.capacity, layer.get_capacity("a.b")) == (5, 7, 2)
    assert BareLayer.extensions == []
    with pytest.raises(ValueError, match="expiry"):
        BareLayer(expiry=0)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="capacity"):
            BareLayer(capacity=bad)  # type: ignore[arg-type]


# -- names ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "chat",
        "chat.room-1_x",
        "A.b.C.9",
        "specific!",
        "specific.inmemory!AbCdEf",
        "x!with.dots-and_dashes",
        "a" * 99,
    ],
)
def test_valid_channel_names(name: str) -> None:
    assert BareLayer().require_valid_channel_name(name) is True


@pytest.mark.parametrize(
    "name",
    ["", "a" * 100, "a" * 150, "has space", "two!bangs!", "!front", "slash/no", "é", None, 5],
)
def test_invalid_channel_names_raise_naming_them(name: Any) -> None:
    with pytest.raises(TypeError, match=re.escape(repr(name))):
        BareLayer().require_valid_channel_name(name)


def test_max_name_length_boundary() -> None:
    layer = BareLayer()
    assert layer.MAX_NAME_LENGTH == 100
    assert layer.require_valid_channel_name("c" * 99)
    assert layer.require_valid_group_name("g" * 99)
    with pytest.raises(TypeError):
        layer.require_valid_channel_name("c" * 100)
    with pytest.raises(TypeError):
        layer.require_valid_group_name("g" * 100)
    assert layer.match_type_and_length("x" * 99)
    assert not layer.match_type_and_length("x" * 100)
    assert not layer.match_type_and_length(b"bytes")


def test_receive_names_must_end_at_the_bang() -> None:
    layer = BareLayer()
    assert layer.require_valid_channel_name("process!", receive=True)
    assert layer.require_valid_channel_name("plain.channel", receive=True)
    with pytest.raises(TypeError, match=re.escape("'process!local'")):
        layer.require_valid_channel_name("process!local", receive=True)
    assert layer.require_valid_channel_name("process!local")


def test_trailing_newline_is_not_a_valid_name() -> None:
    layer = BareLayer()
    with pytest.raises(TypeError):
        layer.require_valid_channel_name("chat\n")
    with pytest.raises(TypeError):
        layer.require_valid_group_name("room\n")


@pytest.mark.parametrize("name", ["room", "room.1-a_b", "g" * 99])
def test_valid_group_names(name: str) -> None:
    assert BareLayer().require_valid_group_name(name) is True


@pytest.mark.parametrize("name", ["", "room!", "a!b", "sp ace", "g" * 100, 3, None])
def test_invalid_group_names_raise_naming_them(name: Any) -> None:
    with pytest.raises(TypeError, match=re.escape(repr(name))):
        BareLayer().require_valid_group_name(name)


def test_valid_channel_names_list() -> None:
    layer = BareLayer()
    assert layer.valid_channel_names(["a", "b!"], receive=True)
    bad: Any
    for bad in ([], "a", ("a",)):
        with pytest.raises(TypeError, match="non-empty list"):
            layer.valid_channel_names(bad)
    with pytest.raises(TypeError, match="'b!c'"):
        layer.valid_channel_names(["a", "b!c"], receive=True)


def test_non_local_name() -> None:
    layer = BareLayer()
    assert layer.non_local_name("abc!def") == "abc!"
    assert layer.non_local_name("abc!") == "abc!"
    assert layer.non_local_name("abc") == "abc"


def test_deprecated_validators_warn_and_still_validate() -> None:
    layer = BareLayer()
    with pytest.warns(DeprecationWarning, match="require_valid_channel_name"):
        assert layer.valid_channel_name("chan!")
    with pytest.warns(DeprecationWarning, match="require_valid_group_name"):
        assert layer.valid_group_name("group")

    def channel_warning() -> Any:
        return pytest.warns(DeprecationWarning, match="valid_channel_name is deprecated")

    def group_warning() -> Any:
        return pytest.warns(DeprecationWarning, match="valid_group_name is deprecated")

    with channel_warning(), pytest.raises(TypeError, match="'bad name'"):
        layer.valid_channel_name("bad name")
    with channel_warning(), pytest.raises(TypeError, match="'a!b'"):
        layer.valid_channel_name("a!b", receive=True)
    with group_warning(), pytest.raises(TypeError, match="'bad!'"):
        layer.valid_group_name("bad!")


# -- capacities ---------------------------------------------------------------------------


def test_compile_capacities_globs_regexes_and_order() -> None:
    compiled = compile_capacities(
        {"http.*": 3, re.compile(r"^ws\.\d+$"): 4, "http.response*": 9, "exact": 2}
    )
    assert [capacity for _, capacity in compiled] == [3, 4, 9, 2]
    assert all(isinstance(pattern, re.Pattern) for pattern, _ in compiled)
    assert compile_capacities(None) == []
    assert compile_capacities({}) == []

    layer = BareLayer(
        capacity=10,
        channel_capacity={"http.*": 3, re.compile(r"^ws\.\d+$"): 4, "http.response*": 9},
    )
    assert layer.get_capacity("http.response.x") == 3  # first match wins, not most specific
    assert layer.get_capacity("ws.42") == 4
    assert layer.get_capacity("ws.x") == 10
    assert layer.get_capacity("exact") == 10
    assert layer.get_capacity("nohttp.x") == 10  # globs are anchored
    # The method form is the same function.
    assert [c for _, c in layer.compile_capacities({"a?": 1})] == [1]
    assert layer.compile_capacities({"a?": 1})[0][0].match("ab")


@pytest.mark.parametrize("capacity", [0, -3, 1.5, "2", True])
def test_compile_capacities_rejects_bad_capacities(capacity: Any) -> None:
    with pytest.raises(ValueError, match="must be a positive integer"):
        compile_capacities({"x.*": capacity})


def test_compile_capacities_rejects_bad_patterns() -> None:
    with pytest.raises(TypeError, match="glob strings or compiled regexes"):
        compile_capacities({42: 1})  # type: ignore[dict-item]


# -- ChannelLayerManager ------------------------------------------------------------------


@pytest.fixture
def manager() -> Iterator[ChannelLayerManager]:
    """A private manager, disconnected from setting_changed when done."""
    from django.core.signals import setting_changed

    made = ChannelLayerManager()
    yield made
    setting_changed.disconnect(made._reset_backends)


def write_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, source: str) -> None:
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)


def test_alias_lookup_is_cached_and_configured(manager: ChannelLayerManager) -> None:
    layers = {
        "default": {"BACKEND": INMEMORY},
        "other": {"BACKEND": INMEMORY, "CONFIG": {"expiry": 5, "capacity": 7}},
    }
    with override_settings(CHANNEL_LAYERS=layers):
        other = manager["other"]
        assert isinstance(other, InMemoryChannelLayer)
        assert (other.expiry, other.capacity) == (5, 7)
        assert manager["other"] is other
        assert manager["default"] is not other
        assert "other" in manager
        assert "missing" not in manager
        with pytest.raises(KeyError):
            manager["missing"]


def test_setting_change_resets_layers(manager: ChannelLayerManager) -> None:
    with override_settings(CHANNEL_LAYERS={"default": {"BACKEND": INMEMORY}}):
        first = manager["default"]
    # Leaving override_settings changed the setting back: a new layer is made.
    second = manager["default"]
    assert second is not first
    with override_settings(CHANNEL_LAYERS={"default": {"BACKEND": INMEMORY}}):
        assert manager["default"] is not second


def test_test_config(manager: ChannelLayerManager) -> None:
    layers = {
        "default": {"BACKEND": INMEMORY, "CONFIG": {"expiry": 50}, "TEST_CONFIG": {"expiry": 1}},
        "plain": {"BACKEND": INMEMORY},
    }
    with override_settings(CHANNEL_LAYERS=layers):
        assert manager.make_test_backend("default").expiry == 1
        assert manager.make_backend("default").expiry == 50
        with pytest.raises(InvalidChannelLayerError, match="No TEST_CONFIG specified for plain"):
            manager.make_test_backend("plain")


def test_missing_backend_module_is_named(manager: ChannelLayerManager) -> None:
    with (
        override_settings(CHANNEL_LAYERS={"default": {"BACKEND": "no_such_pkg.layers.Layer"}}),
        pytest.raises(InvalidChannelLayerError, match="no module named 'no_such_pkg'"),
    ):
        manager["default"]


def test_missing_backend_class_is_named(manager: ChannelLayerManager) -> None:
    path = "channels_runtime.layers.NoSuchLayer"
    with (
        override_settings(CHANNEL_LAYERS={"default": {"BACKEND": path}}),
        pytest.raises(InvalidChannelLayerError, match="has no attribute 'NoSuchLayer'"),
    ):
        manager["default"]


def test_backend_not_a_dotted_path(manager: ChannelLayerManager) -> None:
    with (
        override_settings(CHANNEL_LAYERS={"default": {"BACKEND": "InMemoryChannelLayer"}}),
        pytest.raises(InvalidChannelLayerError, match="not a dotted path"),
    ):
        manager["default"]


def test_import_error_inside_backend_is_not_hidden(
    manager: ChannelLayerManager, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_module(
        tmp_path,
        monkeypatch,
        "crt_broken_backend",
        """
        import crt_dependency_that_is_not_installed

        class Layer:
            pass
        """,
    )
    write_module(
        tmp_path,
        monkeypatch,
        "crt_raising_backend",
        """
        raise ImportError("the backend itself is broken")
        """,
    )
    layers = {
        "missing_dep": {"BACKEND": "crt_broken_backend.Layer"},
        "raises": {"BACKEND": "crt_raising_backend.Layer"},
    }
    with override_settings(CHANNEL_LAYERS=layers):
        with pytest.raises(ModuleNotFoundError) as info:
            manager["missing_dep"]
        assert not isinstance(info.value, InvalidChannelLayerError)
        assert info.value.name == "crt_dependency_that_is_not_installed"
        with pytest.raises(ImportError, match="the backend itself is broken"):
            manager["raises"]


def test_missing_sibling_module_inside_backend_is_not_hidden(
    manager: ChannelLayerManager, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "crt_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "layer.py").write_text("import crt_pkg.lay\n\nclass Layer:\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("crt_pkg", "crt_pkg.layer"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    with (
        override_settings(CHANNEL_LAYERS={"default": {"BACKEND": "crt_pkg.layer.Layer"}}),
        pytest.raises(ModuleNotFoundError) as info,
    ):
        manager["default"]
    assert not isinstance(info.value, InvalidChannelLayerError)


def test_missing_backend_key(manager: ChannelLayerManager) -> None:
    with (
        override_settings(CHANNEL_LAYERS={"default": {"CONFIG": {}}}),
        pytest.raises(InvalidChannelLayerError, match="No BACKEND specified for default"),
    ):
        manager["default"]


def test_bad_config(manager: ChannelLayerManager) -> None:
    layers = {
        "kwargs": {"BACKEND": INMEMORY, "CONFIG": {"hosts": ["redis://x"]}},
        "notdict": {"BACKEND": INMEMORY, "CONFIG": ["expiry", 1]},
        "routing": {"BACKEND": INMEMORY, "ROUTING": "x.routing"},
        "entry": "not a dict",
    }
    with override_settings(CHANNEL_LAYERS=layers):
        with pytest.raises(InvalidChannelLayerError, match="hosts"):
            manager["kwargs"]
        with pytest.raises(InvalidChannelLayerError, match="must be a dict"):
            manager["notdict"]
        with pytest.raises(InvalidChannelLayerError, match="ROUTING"):
            manager["routing"]
        with pytest.raises(InvalidChannelLayerError, match="BACKEND key"):
            manager["entry"]
    with (
        override_settings(CHANNEL_LAYERS=["default"]),
        pytest.raises(InvalidChannelLayerError, match="must be a dict"),
    ):
        manager["default"]


def test_set_swaps_a_layer_in(manager: ChannelLayerManager) -> None:
    replacement = InMemoryChannelLayer()
    original = manager["default"]
    assert manager.set("default", replacement) is original
    assert manager["default"] is replacement
    assert manager.set("new", original) is None


def test_get_channel_layer() -> None:
    layer = get_channel_layer()
    assert isinstance(layer, InMemoryChannelLayer)
    assert get_channel_layer("default") is layer
    assert get_channel_layer("no-such-alias") is None
    with override_settings(CHANNEL_LAYERS={}):
        assert get_channel_layer() is None


@pytest.mark.anyio
async def test_close_all_closes_each_layer_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_module(
        tmp_path,
        monkeypatch,
        "crt_recording_backend",
        """
        from channels_runtime.layers import InMemoryChannelLayer

        CLOSED = []

        class Layer(InMemoryChannelLayer):
            async def close(self):
                CLOSED.append(self)
                await super().close()
        """,
    )
    layers = {
        "a": {"BACKEND": "crt_recording_backend.Layer"},
        "b": {"BACKEND": "crt_recording_backend.Layer"},
    }
    with override_settings(CHANNEL_LAYERS=layers):
        a, b = channel_layers["a"], channel_layers["b"]
        channel_layers.set("alias_of_a", a)
        await a.send("chan", {"type": "x"})
        await channel_layers.close_all()
        closed = sys.modules["crt_recording_backend"].CLOSED
        assert sorted(map(id, closed)) == sorted([id(a), id(b)])
        assert channel_layers.backends == {}
        assert a._channels == {}
        assert channel_layers["a"] is not a  # made afresh after close_all
