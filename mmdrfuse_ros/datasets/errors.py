"""The one error of dataset folders and files."""

from __future__ import annotations


class DatasetError(ValueError):
    """A dataset folder or file that cannot be used; the message names it and says what is wrong."""
