"""Helpers that bring prac_plugin into other tools' training scripts (``timm``: timm's ``train.py`` shape)."""
