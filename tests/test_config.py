import dataclasses

import pytest

from stk.config import ConfigError, check_call_kwargs, from_dict, load_config
from stk.registry import Registry


@dataclasses.dataclass
class Inner:
    n: int = 1
    rate: float = 0.5


@dataclasses.dataclass
class Outer:
    name: str
    inner: Inner = dataclasses.field(default_factory=Inner)
    tags: list[str] = dataclasses.field(default_factory=list)
    opt: int | None = None


def test_from_dict_builds_nested_and_converts_int_to_float():
    o = from_dict(Outer, {"name": "x", "inner": {"n": 3, "rate": 1}, "tags": ["a"]})
    assert o.inner.n == 3 and o.inner.rate == 1.0 and isinstance(o.inner.rate, float)


@pytest.mark.parametrize(
    "data, msg",
    [
        ({"name": "x", "inner": {"nn": 3}}, "inner.nn"),
        ({"name": "x", "inner": {"n": "six"}}, "inner.n: expected int"),
        ({"name": "x", "inner": {"n": True}}, "inner.n: expected int"),
        ({"name": "x", "tags": "a"}, "tags: expected a list"),
        ({"inner": {}}, "name: required"),
        ({"name": "x", "opt": 1.5}, "opt"),
    ],
)
def test_from_dict_rejects_bad_keys_and_types(data, msg):
    with pytest.raises(ConfigError, match=msg):
        from_dict(Outer, data)


def test_load_config_uses_safe_load_and_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("name: a\ninner: {n: 2}\n")
    o = load_config(Outer, p, ["inner.rate=0.25", "opt=7"])
    assert (o.inner.n, o.inner.rate, o.opt) == (2, 0.25, 7)
    p.write_text("!!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(Outer, p)


class Base:
    pass


def test_registry_checks_constructor_kwargs():
    reg = Registry("thing", base=Base)

    @reg.register("a")
    class A(Base):
        def __init__(self, *, size: int = 2, name: str = "x", dim: int = 0) -> None:
            self.size, self.name, self.dim = size, name, dim

    obj = reg.build({"name": "a", "conf": {"size": 5}}, dim=3)
    assert (obj.size, obj.dim) == (5, 3)
    with pytest.raises(ConfigError, match="thing.conf.sise"):
        reg.build({"name": "a", "conf": {"sise": 5}})
    with pytest.raises(ConfigError, match="expected int"):
        reg.build({"name": "a", "conf": {"size": "5"}})
    with pytest.raises(ConfigError, match="known: a"):
        reg.build({"name": "b"})
    with pytest.raises(ConfigError, match="set by the toolkit"):
        reg.build({"name": "a", "conf": {"dim": 1}}, dim=3)
    with pytest.raises(TypeError):
        reg.register("c")(int)


def test_check_call_kwargs_on_function():
    def f(*, a: int, b: list[int] | None = None):
        return a

    assert check_call_kwargs(f, {"a": 1, "b": [1, 2]}, "f") == {"a": 1, "b": [1, 2]}
    with pytest.raises(ConfigError, match=r"f.b\[1\]"):
        check_call_kwargs(f, {"a": 1, "b": [1, "x"]}, "f")


@pytest.mark.parametrize("raw, value", [("2e-3", 0.002), ("1E5", 1e5), ("-3.5e+2", -350.0), ("1.0e5", 1e5)])
def test_float_in_exponent_notation_is_accepted(tmp_path, raw, value):
    # PyYAML (YAML 1.1) reads 2e-3 as a *string*; a float field takes it as the float YAML 1.2 means
    p = tmp_path / "c.yaml"
    p.write_text(f"name: a\ninner: {{rate: {raw}}}\n")
    assert load_config(Outer, p).inner.rate == pytest.approx(value)
    assert load_config(Outer, tmp_path / "c.yaml", [f"inner.rate={raw}"]).inner.rate == pytest.approx(value)
    with pytest.raises(ConfigError, match="expected float"):
        from_dict(Outer, {"name": "x", "inner": {"rate": "fast"}})
    with pytest.raises(ConfigError, match="expected int"):
        from_dict(Outer, {"name": "x", "inner": {"n": "2e3"}})


def test_yaml_tag_in_override_is_a_config_error(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("name: a\n")
    marker = tmp_path / "pwned"
    with pytest.raises(ConfigError, match="invalid YAML value"):
        load_config(Outer, p, [f"name=!!python/object/apply:os.system ['touch {marker}']"])
    assert not marker.exists()
