"""Backend defaults have one source, the config dataclasses: every field is documented there,
and ``rgbd-seg backends --defaults NAME`` prints them as YAML that reads back to the same
config."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from rgbd_seg_ros.backends.defaults import defaults_yaml, field_docs
from rgbd_seg_ros.backends.registry import get_entry, list_backends, make_config
from rgbd_seg_ros.cli.main import main

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize('name', list_backends())
def test_every_option_is_documented_on_its_dataclass(name: str) -> None:
    config_cls = get_entry(name).config_cls
    docs = field_docs(config_cls)
    undocumented = [f.name for f in dataclasses.fields(config_cls) if not docs.get(f.name)]
    assert not undocumented


@pytest.mark.parametrize('name', list_backends())
def test_defaults_yaml_reads_back_to_the_default_config(name: str) -> None:
    text = defaults_yaml(name)
    options = yaml.safe_load(text)
    assert list(options) == [f.name for f in dataclasses.fields(get_entry(name).config_cls)]
    assert make_config(name, **options) == make_config(name)
    # each option sits under its doc, as a comment
    docs = field_docs(get_entry(name).config_cls)
    first = next(iter(options))
    assert f'# {docs[first].splitlines()[-1]}\n{first}: ' in text


def test_cli_prints_the_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(['backends', '--defaults', 'esanet_add']) == 0
    options = yaml.safe_load(capsys.readouterr().out)
    assert options['encoder'] == 'resnet34' and options['aux_weights'] == [0.5, 0.5]
    assert main(['backends', '--defaults', 'no_such_backend']) == 2
    assert 'valid backends' in capsys.readouterr().err
    assert main(['backends']) == 0
    listing = capsys.readouterr().out
    assert all(name in listing for name in list_backends())


def test_no_second_copy_of_the_defaults() -> None:
    """The per-backend YAML files that duplicated the dataclasses are gone for good."""
    assert not (ROOT / 'config' / 'backends').exists()
