"""Typed configuration (cpabanim/config/typed.py): one frozen dataclass per params section whose fields are the
schema's keys at every depth, whose defaults are the schema's, and whose dict is the schema's representation."""

from __future__ import annotations

import dataclasses
import json

import pytest

from cpabanim.config.schema import defaults, schema
from cpabanim.config.section import Section
from cpabanim.config.typed import SECTIONS, DataConfig, ModelConfig, SectionConfig, TrainConfig
from cpabanim.errors import ConfigError


def test_every_params_section_has_a_dataclass():
    sections = {name for name, node in schema()["properties"].items() if "properties" in node}
    assert set(SECTIONS) == sections


def _schema_keys(node: dict) -> dict:
    """The nested key structure of a schema node: {key: sub-structure or None for a leaf}."""
    return {key: _schema_keys(sub) if "properties" in sub else None for key, sub in node["properties"].items()}


def _field_keys(cls: type[SectionConfig]) -> dict:
    instance = cls()
    out = {}
    for f in dataclasses.fields(cls):
        value = getattr(instance, f.name)
        out[f.name] = _field_keys(type(value)) if isinstance(value, SectionConfig) else None
    return out


@pytest.mark.parametrize("name", sorted(SECTIONS))
def test_the_fields_are_the_schema_keys_in_schema_order(name):
    keys = _schema_keys(schema()["properties"][name])
    fields = _field_keys(SECTIONS[name])
    assert fields == keys  # a schema key without a field (or a field without a key) fails here
    assert json.dumps(fields) == json.dumps(keys)  # and the order: to_dict() keeps the schema's


@pytest.mark.parametrize("name", sorted(SECTIONS))
def test_the_defaults_are_the_schema_defaults_byte_for_byte(name):
    cls = SECTIONS[name]
    assert cls().to_dict() == defaults()[name]
    assert json.dumps(cls().to_dict()) == json.dumps(defaults()[name])


@pytest.mark.parametrize("name", sorted(SECTIONS))
def test_round_trip_through_a_dict_and_a_section(name):
    cls = SECTIONS[name]
    config = cls.from_mapping(defaults()[name])
    assert config == cls() and cls.from_mapping(config.to_dict()) == config
    assert cls.from_mapping(Section(defaults()[name])) == config
    hash(config)  # frozen all the way down: lists are tuples


@pytest.mark.parametrize("name", sorted(SECTIONS))
def test_an_unknown_key_is_refused_with_its_name(name):
    with pytest.raises(ConfigError, match=f"{name}.no_such_key"):
        SECTIONS[name].from_mapping({"no_such_key": 1})


def test_nested_unknown_keys_missing_keys_and_plain_python():
    with pytest.raises(ConfigError, match="model.generator.depth"):
        ModelConfig.from_mapping({"generator": {"depth": 3}})
    partial = ModelConfig.from_mapping({"num_cpab": 1, "generator": {"block_expansion": 8}})
    assert partial.generator.block_expansion == 8
    assert partial.generator.max_features == defaults()["model"]["generator"]["max_features"]
    config = ModelConfig(motion="tps", num_cpab=1, partial_tessellation=[3, 3])
    assert config.partial_tessellation == (3, 3) and config.to_dict()["partial_tessellation"] == [3, 3]
    assert config.dense_motion == ModelConfig().dense_motion
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.num_cpab = 2  # type: ignore[misc]
    assert TrainConfig().replace(lr_generator=0.5).lr_generator == 0.5


def test_a_nullable_section_stays_null():
    data = DataConfig.from_mapping({"augmentation": None})
    assert data.augmentation is None and data.to_dict()["augmentation"] is None
    jitterless = DataConfig.from_mapping({"augmentation": {"jitter": None, "resize_ratio": [0.9, 1.1]}})
    assert jitterless.augmentation.jitter is None and jitterless.augmentation.resize_ratio == (0.9, 1.1)
    assert jitterless.to_dict()["augmentation"]["resize_ratio"] == [0.9, 1.1]
