"""Nested dataclass configs: YAML files plus ``--set a.b=c`` overrides.

A config is a tree of ``@dataclass`` objects. `load_config` reads a YAML file,
applies overrides (values parsed as YAML, so ``--set optim.lr=3e-5`` is a float
and ``--set data.tasks=[xquad,agxqa]`` a list), and builds the dataclasses,
refusing unknown keys with their full dotted path. Dataclasses validate their
own fields in ``__post_init__``.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

from metarag.errors import MetaRAGError

T = TypeVar("T")


class ConfigError(MetaRAGError, ValueError):
    """A config file or override is malformed, unknown or out of range."""


def load_config(cls: type[T], path: str | Path | None = None,
                overrides: Sequence[str] = ()) -> T:
    """Build config ``cls`` from an optional YAML file and ``key.path=value`` overrides."""
    import yaml

    data: dict[str, Any] = {}
    source = str(path) if path is not None else "defaults"
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: malformed YAML: {err}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping at the top, got {type(loaded).__name__}")
        data = loaded or {}
    for item in overrides:
        apply_override(data, item)
    return from_dict(cls, data, source=source)


def apply_override(data: dict[str, Any], item: str) -> None:
    """Set ``data[a][b] = value`` from ``"a.b=value"`` (value parsed as YAML)."""
    import yaml

    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {item!r}: expected key.path=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"override {item!r}: value is not valid YAML: {err}") from None
    node = data
    parts = key.strip().split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {item!r}: {part!r} is a value, not a section")
        node = child
    node[parts[-1]] = value


def from_dict(cls: type[T], data: dict[str, Any], *, source: str = "config",
              prefix: str = "") -> T:
    """Build dataclass ``cls`` from a nested dict; unknown keys are an error."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: {prefix or 'top level'} must be a mapping, "
                          f"got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        where = ", ".join(prefix + k for k in unknown)
        raise ConfigError(f"{source}: unknown key {where}; known keys under "
                          f"{prefix.rstrip('.') or 'the top level'}: {', '.join(fields)}")
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _convert(hints[name], value, source, prefix + name)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{source}: {prefix.rstrip('.') or cls.__name__}: {err}") from None


def to_dict(config: Any) -> dict[str, Any]:
    """The config as plain data (for JSON/YAML and checkpoints)."""
    return dataclasses.asdict(config)


def save_config(config: Any, path: str | Path) -> Path:
    """Write the resolved config as YAML (every run saves one next to its outputs)."""
    import yaml

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(to_dict(config), sort_keys=False, allow_unicode=True))
    return path


def _convert(hint: Any, value: Any, source: str, key: str) -> Any:
    """Coerce a YAML value to the field's annotated type, naming the key on failure."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, source=source, prefix=key + ".")
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        non_none = [a for a in args if a is not type(None)]
        if len(non_none) == 1:
            return _convert(non_none[0], value, source, key)
        return value
    if origin in (list, tuple, Sequence) or hint in (list, tuple):
        if not isinstance(value, list | tuple):
            value = [value]  # a single value where a list is expected
        inner = args[0] if args else Any
        items = [_convert(inner, v, source, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple or hint is tuple else items
    if hint is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):
        # YAML 1.1 reads "3e-4" (no dot) as a string; users mean the number.
        try:
            return float(value)
        except ValueError:
            raise ConfigError(f"{source}: {key} must be float, got {value!r}") from None
    if hint in (int, float, str, bool) and not isinstance(value, hint):
        if hint is str and isinstance(value, int | float):
            return str(value)
        raise ConfigError(f"{source}: {key} must be {hint.__name__}, got {value!r}")
    if hint is int and isinstance(value, bool):
        raise ConfigError(f"{source}: {key} must be int, got {value!r}")
    return value
