"""Recipes: the schema of a run (sections and fields with their help), bounded YAML, --set overrides, generated docs."""
