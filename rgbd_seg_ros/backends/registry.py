"""Name -> backend registry (timm / smp style), so checkpoints and configs refer to networks
by name and a new backend plugs in with one decorator.

A backend is an ``nn.Module`` class constructed as ``cls(num_classes, config)`` where ``config``
is an instance of its config dataclass. Backend modules register themselves on import; the
registry imports the modules listed in ``BACKEND_MODULES`` the first time it is asked.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rgbd_seg_ros.errors import ConfigError

# Modules (under rgbd_seg_ros.backends) whose import registers backends.
BACKEND_MODULES: tuple[str, ...] = (
    'adapnetpp',
    'ssma',
    'rfbnet',
    'erfnet',
    'nanet',
    'depth_gating',
    'ssma_ann',
    'ann',
    'two_stream_add',
)


@dataclass(frozen=True)
class BackendEntry:
    """What the registry knows about one backend."""

    name: str
    cls: type
    config_cls: type
    summary: str


_REGISTRY: dict[str, BackendEntry] = {}
_LOADED = False


def register_backend(name: str, config_cls: type, summary: str = '') -> Callable[[type], type]:
    """Class decorator: register ``cls`` under ``name`` with its config dataclass."""
    if not dataclasses.is_dataclass(config_cls):
        raise TypeError(f'config of backend {name!r} must be a dataclass')

    def decorate(cls: type) -> type:
        if name in _REGISTRY and _REGISTRY[name].cls is not cls:
            raise ValueError(f'backend {name!r} is already registered')
        doc_lines = (cls.__doc__ or '').strip().splitlines()
        text = summary or (doc_lines[0] if doc_lines else '')
        _REGISTRY[name] = BackendEntry(name, cls, config_cls, text)
        return cls

    return decorate


def _load_modules() -> None:
    global _LOADED
    if _LOADED:
        return
    for module in BACKEND_MODULES:
        importlib.import_module(f'rgbd_seg_ros.backends.{module}')
    _LOADED = True


def list_backends() -> list[str]:
    """Names of every registered backend, sorted."""
    _load_modules()
    return sorted(_REGISTRY)


def get_entry(name: str) -> BackendEntry:
    """Look a backend up; the error lists the valid names."""
    _load_modules()
    try:
        return _REGISTRY[name]
    except KeyError:
        valid = ', '.join(sorted(_REGISTRY)) or 'none'
        raise ConfigError(f'unknown backend {name!r}; valid backends: {valid}') from None


def backend_summary(name: str) -> str:
    """One line describing the backend (its paper), for listings."""
    return get_entry(name).summary


def make_config(name: str, **overrides: Any) -> Any:
    """Build the backend's config dataclass from defaults plus ``overrides``.

    The dataclass holds the only copy of the defaults (``rgbd-seg backends --defaults NAME``
    prints them). Unknown keys are an error naming the valid ones, so a typo in a recipe's
    ``model.options`` never passes silently.
    """
    config_cls = get_entry(name).config_cls
    fields = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ConfigError(f'backend {name!r} has no option(s) {unknown}; valid: {sorted(fields)}')
    return config_cls(**overrides)


def config_to_dict(config: Any) -> dict[str, Any]:
    """Plain-data form of a config dataclass (for checkpoints and YAML)."""
    return dataclasses.asdict(config)


def build_backend(name: str, num_classes: int, encoder: str | None = None, **config: Any) -> Any:
    """Instantiate backend ``name`` for ``num_classes`` classes.

    ``encoder`` and the keyword options override the config dataclass defaults.
    """
    if num_classes < 1:
        raise ConfigError(f'num_classes must be positive, got {num_classes}')
    if encoder is not None:
        config['encoder'] = encoder
    cfg = make_config(name, **config)
    return get_entry(name).cls(num_classes, cfg)
