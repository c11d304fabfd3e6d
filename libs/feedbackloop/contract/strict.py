"""Strictness at the HTTP edge: name every field a request sends that the contract lacks.

Contract models ignore unknown fields (so consumers tolerate newer producers); requests must not,
or a misspelt `rating` would be dropped silently. This walks the model's fields, recursing into
nested models, lists of them and optionals.
"""

from __future__ import annotations

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


def unknown_fields(
    model: type[BaseModel], data: Any, location: tuple[str | int, ...] = ()
) -> list[tuple[str | int, ...]]:
    """Locations of keys in `data` that `model` does not define."""
    if not isinstance(data, dict):
        return []
    fields = model.model_fields
    found: list[tuple[str | int, ...]] = []
    for key, value in data.items():
        field = fields.get(key)
        if field is None:
            found.append((*location, key))
            continue
        nested = _models_in(field.annotation)
        if len(nested) != 1:
            continue
        if isinstance(value, list):
            for index, item in enumerate(value):
                found.extend(unknown_fields(nested[0], item, (*location, key, index)))
        else:
            found.extend(unknown_fields(nested[0], value, (*location, key)))
    return found
