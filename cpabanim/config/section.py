"""The frozen view of params a stage runs with (its declared keys only), and how it is cut out of the whole."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any

from cpabanim.config.mappings import deep_merge, nest
from cpabanim.errors import ConfigError


class Section(dict):
    """A frozen view of params: ``cfg.train.batch_size`` or ``cfg["train"]["batch_size"]``.

    Built once at the CLI from validated params and restricted to the keys a stage declares, so a stage cannot
    read (and the orchestrators cannot miss) a key it did not declare: reading one raises ``KeyError`` naming it.
    A ``dict`` underneath, so JSON, comparisons and ``torch.save`` see plain values.
    """

    def __init__(self, values: Mapping[str, Any], where: str = ""):
        super().__init__(
            {k: Section(v, f"{where}{k}.") if isinstance(v, Mapping) else copy.deepcopy(v) for k, v in values.items()}
        )
        object.__setattr__(self, "_where", where)

    def __getitem__(self, key: str) -> Any:
        try:
            return dict.__getitem__(self, key)
        except KeyError:
            raise KeyError(f"{self._where}{key} (not among the parameters this stage declares)") from None

    def __getattr__(self, key: str) -> Any:
        if key.startswith("__") or key == "_where":
            raise AttributeError(key)
        try:
            return self[key]
        except KeyError as err:
            raise AttributeError(str(err)) from None

    def _read_only(self, *args, **kwargs):
        raise TypeError(f"parameters are read-only ({self._where or 'params'})")

    __setattr__ = __setitem__ = __delitem__ = _read_only
    clear = pop = popitem = setdefault = update = __ior__ = _read_only  # type: ignore[assignment]

    def __deepcopy__(self, memo) -> dict[str, Any]:
        return self.to_dict()  # a copy is for changing: hand out a plain dict

    def __copy__(self) -> dict[str, Any]:
        return self.to_dict()

    def __reduce__(self):
        return (dict, (self.to_dict(),))  # pickles (DataLoader workers, checkpoints) as a plain dict

    def to_dict(self) -> dict[str, Any]:
        return {k: v.to_dict() if isinstance(v, Section) else copy.deepcopy(v) for k, v in self.items()}


def restrict(params: Mapping[str, Any], keys: Iterable[str]) -> dict[str, Any]:
    """Only the dotted ``keys`` (a key names a value or a whole section) of ``params``, as a nested dict."""
    out: dict[str, Any] = {}
    for dotted in keys:
        node: Any = params
        for part in dotted.split("."):
            if not isinstance(node, Mapping) or part not in node:
                raise ConfigError(f"a stage declares the parameter {dotted!r}, which the schema does not have")
            node = node[part]
        out = deep_merge(out, nest({dotted: copy.deepcopy(node)}))
    return out
