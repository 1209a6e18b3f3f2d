"""The Keras config protocol shared by initializers, regularizers and constraints."""
from __future__ import annotations


class Configurable:
    """get_config / from_config / repr over the constructor arguments, as Keras objects have."""

    def get_config(self) -> dict:
        """The constructor arguments, as a dict."""
        return {}

    @classmethod
    def from_config(cls, config: dict):
        """Creates an instance from `get_config()`'s dict."""
        return cls(**config)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"
