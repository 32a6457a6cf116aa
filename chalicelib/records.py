"""``@record``: the engine's value classes, dataclass-style, at a fraction of the start-up cost.

The copy join runs as a CLI next to ``cat``, where every millisecond of start-up shows:
``import dataclasses`` pulls in ``inspect`` (``ast``, ``dis``, ``tokenize``...) and ``@dataclass``
compiles about five functions per class, together about 18 ms for the dozen classes a copy join
imports, against ``cat``'s 80 ms for L. ``record`` builds the same methods from closures, compiling
only ``__init__`` (so it keeps its real signature), and covers what those classes use:

- fields from the class's own annotations, in order, with defaults or ``field(default=...,
  default_factory=..., repr=..., compare=...)``;
- ``__init__``, ``__repr__`` (``Name(a=1, b='x')``), ``__eq__`` (same class, compared fields);
- ``frozen=True``: assigning or deleting an attribute raises ``FrozenInstanceError``, and
  ``__hash__`` hashes the compared fields; otherwise instances are unhashable, as dataclasses';
- ``fields(cls_or_obj)``, ``asdict(obj)`` and ``replace(obj, **changes)``.

No inheritance between records, no ``__post_init__``, no ordering: none of the classes needs them.
"""
from __future__ import annotations

_MISSING = object()


class _Factory:
    def __repr__(self) -> str:
        return "<factory>"  # how the signature shows a default_factory field, as for dataclasses


_FACTORY = _Factory()


class FrozenInstanceError(AttributeError):
    """An attribute of a frozen record was assigned or deleted."""


class Field:
    __slots__ = ("name", "default", "default_factory", "repr", "compare")

    def __init__(self, default=_MISSING, default_factory=_MISSING, repr: bool = True, compare: bool = True):
        if default is not _MISSING and default_factory is not _MISSING:
            raise ValueError("cannot specify both default and default_factory")
        self.name = ""
        self.default, self.default_factory, self.repr, self.compare = default, default_factory, repr, compare

    def __repr__(self) -> str:
        return f"Field(name={self.name!r})"


def field(*, default=_MISSING, default_factory=_MISSING, repr: bool = True, compare: bool = True):
    return Field(default, default_factory, repr, compare)


def fields(cls_or_obj) -> tuple[Field, ...]:
    try:
        return cls_or_obj.__record_fields__
    except AttributeError:
        raise TypeError("fields() needs a record class or instance") from None


def asdict(obj) -> dict:
    """The fields as a dict, records inside (also in lists, tuples and dicts) turned into dicts."""
    return {f.name: _plain(getattr(obj, f.name)) for f in fields(obj)}


def _plain(value):
    if hasattr(type(value), "__record_fields__"):
        return asdict(value)
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    if isinstance(value, dict):
        return {_plain(k): _plain(v) for k, v in value.items()}
    return value


def replace(obj, **changes):
    """A copy of ``obj`` with some fields changed."""
    for f in fields(obj):
        if f.name not in changes:
            changes[f.name] = getattr(obj, f.name)
    return type(obj)(**changes)


def record(cls=None, /, *, frozen: bool = False):
    """Class decorator: ``@record`` or ``@record(frozen=True)``."""
    def wrap(cls):
        return _build(cls, frozen)

    return wrap if cls is None else wrap(cls)


def _build(cls, frozen: bool):
    found = []
    annotations = cls.__dict__.get("__annotations__", {})
    for name in annotations:
        value = cls.__dict__.get(name, _MISSING)
        if isinstance(value, Field):
            f = value
            if f.default is _MISSING:
                delattr(cls, name)
            else:
                setattr(cls, name, f.default)
        else:
            f = Field(default=value)
        f.name = name
        found.append(f)
    all_fields = tuple(found)
    cls.__record_fields__ = all_fields
    cls.__init__ = _init(cls, all_fields, annotations, frozen)
    shown = tuple(f.name for f in all_fields if f.repr)
    compared = tuple(f.name for f in all_fields if f.compare)

    def __repr__(self):
        inner = ", ".join(f"{n}={getattr(self, n)!r}" for n in shown)
        return f"{type(self).__qualname__}({inner})"

    def __eq__(self, other):
        if other.__class__ is not self.__class__:
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n in compared)

    cls.__repr__, cls.__eq__ = __repr__, __eq__
    if frozen:
        def __setattr__(self, name, value):
            raise FrozenInstanceError(f"cannot assign to field {name!r}")

        def __delattr__(self, name):
            raise FrozenInstanceError(f"cannot delete field {name!r}")

        def __hash__(self):
            return hash(tuple(getattr(self, n) for n in compared))

        cls.__setattr__, cls.__delattr__, cls.__hash__ = __setattr__, __delattr__, __hash__
    else:
        cls.__hash__ = None
    return cls


def _init(cls, all_fields: tuple[Field, ...], annotations: dict, frozen: bool):
    """``__init__(self, a, b=<default>, ...)``, compiled once: positional and keyword calls, and
    errors for missing or unknown arguments, as for any function."""
    params, body = [], []
    scope: dict = {"_FACTORY": _FACTORY, "_set": object.__setattr__}
    defaulted = False  # a field before this one has a default
    for f in all_fields:
        n = f.name
        if f.default is not _MISSING:
            scope[f"_d_{n}"] = f.default
            params.append(f"{n}=_d_{n}")
            value = n
        elif f.default_factory is not _MISSING:
            scope[f"_f_{n}"] = f.default_factory
            params.append(f"{n}=_FACTORY")
            value = f"_f_{n}() if {n} is _FACTORY else {n}"
        else:
            if defaulted:
                raise TypeError(f"non-default field {n!r} follows a default one in {cls.__name__}")
            params.append(n)
            value = n
        defaulted = defaulted or f.default is not _MISSING or f.default_factory is not _MISSING
        body.append(f"  _set(self, {n!r}, {value})" if frozen else f"  self.{n} = {value}")
    source = f"def __init__(self, {', '.join(params)}):\n" + ("\n".join(body) or "  pass") + "\n"
    exec(source, scope)  # noqa: S102 - source built above from the class's own field names
    init = scope["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__annotations__ = {f.name: annotations[f.name] for f in all_fields} | {"return": None}
    return init
