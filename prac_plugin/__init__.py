"""prac_plugin: lottery tickets for timm models on Hugging Face datasets, found efficiently.

Importing the package registers the classic LTH architectures (lenet_300_100, cifar_resnet20/32/56,
cifar_vgg16) into timm's model registry.
"""

__version__ = "0.1.0"

from .engine import models_lth  # noqa: E402,F401  (timm registration)
from .errors import PracError  # noqa: E402
from .masks import MaskEnforcer, TicketMask, prunable_parameter_names  # noqa: E402
from .recipes import Recipe, load_recipe, parse_recipe  # noqa: E402
from .rewind import RewindPoint  # noqa: E402
from .strategies import DataSelectionStrategy, TicketStrategy, register  # noqa: E402
from .structured import export_ticket, load_structured_ticket  # noqa: E402


def run(recipe, output_dir: str):
    """Run a recipe (a `Recipe`, a dict, or a YAML path) into ``output_dir``; returns the summary rows."""
    from .pipeline import run_recipe

    if isinstance(recipe, dict):
        recipe = parse_recipe(recipe)
    elif not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe)
    return run_recipe(recipe, output_dir)


__all__ = [
    "__version__", "PracError", "MaskEnforcer", "TicketMask", "prunable_parameter_names", "Recipe", "load_recipe",
    "parse_recipe", "RewindPoint", "DataSelectionStrategy", "TicketStrategy", "register", "run",
    "export_ticket", "load_structured_ticket",
]
