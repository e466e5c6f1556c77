"""String-keyed registries: every option chosen by name looks it up here and fails listing the valid keys."""

from __future__ import annotations

from typing import Mapping, TypeVar

from dunemap.errors import ConfigError

T = TypeVar("T")


def choose(registry: Mapping[str, T], name: str, what: str) -> T:
    """Return ``registry[name]`` or raise a ConfigError quoting ``name`` and listing the valid keys."""
    try:
        return registry[name]
    except KeyError:
        valid = ", ".join(sorted(registry))
        raise ConfigError(f"unknown {what} {name!r}; valid: {valid}") from None
