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


def resolve(identifier, argname: str, *, base: type, by_name: dict, by_class_name: dict,
            names: list, what: str):
    """The one resolver behind `initializers.get`, `regularizers.get` and `constraints.get`.

    Accepts what Keras accepts for these arguments: None (returns None), a name in `by_name`
    (a fresh instance each time), a `{"class_name": ..., "config": ...}` dict whose class is in
    `by_class_name`, a subclass of `base` (instantiated with its defaults), or any callable.
    `names` are the names listed in the error for an unknown name; `what` completes the list of
    accepted kinds in the messages (e.g. "a Constraint, a callable or None"). Every error is a
    ValueError naming `argname`.
    """
    if identifier is None:
        return None
    if isinstance(identifier, str):
        factory = by_name.get(identifier)
        if factory is None:
            raise ValueError(f"unknown {argname} {identifier!r}; expected one of {names}, {what}")
        return factory()
    if isinstance(identifier, dict):
        name = identifier.get("class_name")
        cls = by_class_name.get(name)
        if cls is None:
            raise ValueError(f"unknown {argname} class {name!r}; expected one of "
                             f"{sorted(by_class_name)}")
        return cls.from_config(dict(identifier.get("config") or {}))
    if isinstance(identifier, type) and issubclass(identifier, base):
        return identifier()
    if callable(identifier):
        return identifier
    raise ValueError(f"could not interpret {argname} {identifier!r}: expected a name, {what}")
