"""The workflow config: its schema, validation, and the settings of each job resolved from it.

The workflow (workflow/rules/common.smk) and `im-core check-config` use what this module
exports; the jobs get their settings as JSON (settings.py)."""
from .datasets import resolve_dataset
from .resolve import (generation_settings, models_in_generation, model_plan, model_seed, pseudo_settings,
                      pseudo_source, selection_settings, train_settings, uses_pseudo_labels)
from .schema import SCHEMA_PATH, DuplicateKeyError, defaults, load_config_file, load_schema, load_yaml_file
from .validate import validate_config

__all__ = ["SCHEMA_PATH", "DuplicateKeyError", "defaults", "generation_settings", "load_config_file", "load_schema",
           "load_yaml_file", "model_plan", "model_seed", "models_in_generation", "pseudo_settings", "pseudo_source",
           "resolve_dataset", "selection_settings", "train_settings", "uses_pseudo_labels", "validate_config"]
