"""padam_compare: ``padam compare``, the paper's optimizer comparison as a command.

It trains one model with momentum SGD, Adam, AMSGrad, AdamW and Padam over several seeds and
writes a table, CSV/JSON of every epoch and a figure. It uses several frameworks (each backend
imports its own lazily), so it lives outside ``padam_core`` and the adapters.
"""

from padam_compare.config import CompareConfig, ConfigError, build_config
from padam_compare.data import DataError, Dataset, load_cifar, load_dataset

__all__ = [
    "CompareConfig",
    "ConfigError",
    "DataError",
    "Dataset",
    "build_config",
    "load_cifar",
    "load_dataset",
]
