"""Fusion models: the registry (:mod:`.registry`, the one place that knows model names), shared
building blocks (:mod:`.layers`) and one module per built-in family (imf and interactive,
transformer, concat, late, ridge).

The public contract, for built-ins and plug-ins alike::

    model = Model(dims, **options)      # dims[i]: width of feature stream i, in --features order
    model(streams, present, valid)      # streams[i] (B, W, dims[i]) float32, present[i] (B, W) bool,
                                        # valid (B, W) bool  ->  (B, W, 2) valence, arousal

How options, descriptions and capabilities are declared: :mod:`.registry`.
"""

from vafusion.fusion.models.registry import (
    ALIASES,
    BUILTINS,
    DEFAULT_MODEL,
    ENTRY_POINT_GROUP,
    ModelSpec,
    Option,
    count_parameters,
    is_closed_form,
    list_models,
    parse_model_options,
    resolve_model,
)

__all__ = [
    "ALIASES",
    "BUILTINS",
    "DEFAULT_MODEL",
    "ENTRY_POINT_GROUP",
    "ModelSpec",
    "Option",
    "count_parameters",
    "is_closed_form",
    "list_models",
    "parse_model_options",
    "resolve_model",
]
