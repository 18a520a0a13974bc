"""Prompt-tuning methods, one file each, behind the :class:`PromptMethod` interface."""

from calprompt.methods.base import (
    METHODS,
    MethodConfig,
    MethodOutput,
    PromptMethod,
    available_methods,
    build_method,
    get_method,
    register_method,
)

__all__ = [
    "METHODS",
    "MethodConfig",
    "MethodOutput",
    "PromptMethod",
    "available_methods",
    "build_method",
    "get_method",
    "register_method",
]
