"""The task heads. Importing this package imports every module in it, and each registers its builders
with ``multitask.task`` (which imports the package when first asked for a task): a new head is a new
file here plus its config under configs/task/."""
import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
