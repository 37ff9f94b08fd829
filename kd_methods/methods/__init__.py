"""One file per method; importing this package imports every method module so each registers itself."""
import importlib
import pkgutil

from .base import METHODS, Distiller, Hyper, Stage, StepContext, build_method

for _info in pkgutil.iter_modules(__path__):
    if _info.name != "base":
        importlib.import_module(f"{__name__}.{_info.name}")

__all__ = ["METHODS", "Distiller", "Hyper", "Stage", "StepContext", "build_method"]
