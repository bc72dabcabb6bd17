"""neogen: a small causal LM as a text classifier through single-token completions.

read -> prompt/labels -> train -> classify/score -> evaluate
"""

from neogen.classify import Classifier, ScoreBatch, classify
from neogen.errors import ConfigError, DataError, NeogenError
from neogen.labels import LabelCodec
from neogen.prompt import SEPARATOR
from neogen.recipe import Recipe, load_recipe
from neogen.train import train

__all__ = [
    "SEPARATOR",
    "Classifier",
    "ConfigError",
    "DataError",
    "LabelCodec",
    "NeogenError",
    "Recipe",
    "ScoreBatch",
    "classify",
    "load_recipe",
    "train",
]
__version__ = "0.1.0"
