"""Strictness at the HTTP edge: name every field a request sends that the contract lacks.

Contract models ignore unknown fields (so consumers tolerate newer producers); requests must not,
or a misspelt `rating` would be dropped silently. This walks the model's fields, recursing into
nested models, lists of them and optionals.
"""

from __future__ import annotations

import functools
import types
import typing
from typing import Any

from pydantic import BaseModel


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType, list, typing.Annotated):
        found: list[type[BaseModel]] = []
        for argument in typing.get_args(annotation):
            found.extend(_models_in(argument))
        return found
    return []


@functools.cache
def _shape(model: type[BaseModel]) -> tuple[frozenset[str], dict[str, type[BaseModel]]]:
    """The model's field names, and the nested model of each field that holds exactly one."""
    nested: dict[str, type[BaseModel]] = {}
    for name, field in model.model_fields.items():
        models = _models_in(field.annotation)
        if len(models) == 1:
            nested[name] = models[0]
    return frozenset(model.model_fields), nested


def unknown_fields(
    model: type[BaseModel], data: Any, location: tuple[str | int, ...] = ()
) -> list[tuple[str | int, ...]]:
    """Locations of keys in `data` that `model` does not define."""
    if not isinstance(data, dict):
        return []
    names, nested = _shape(model)
    found: list[tuple[str | int, ...]] = []
    for key, value in data.items():
        if key not in names:
            found.append((*location, key))
            continue
        inner = nested.get(key)
        if inner is None:
            continue
        if isinstance(value, list):
            for index, item in enumerate(value):
                found.extend(unknown_fields(inner, item, (*location, key, index)))
        else:
            found.extend(unknown_fields(inner, value, (*location, key)))
    return found
