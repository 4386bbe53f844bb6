"""Search-space files (``search_spaces/*.yaml``): loading, validation and expansion into trials.

Plain Python (no Ray, no Optuna, no torch) so that every file can be checked quickly and the same
expansion feeds both ``--dry-run`` and the Ray param space. A file is one study::

    kind: compare | search | ablate
    description: one line
    base: {section.key: value}                 # shared by every trial (--set overrides it)
    seeds: 2                                   # N (seeds 0..N-1) or a list [0, 3, 7]
    method_overrides: {method: {key: value}}   # tuned defaults per method
    methods: [grpo, entropic]                  # compare: the grid is methods x seeds
    method: entropic                           # search / ablate: the one method studied
    params: {key: {type: float|int|categorical, low, high, log, choices}}   # search
    primary: final/pass@1                      # compare / ablate: the report's primary metric
    objective: tracking | accuracy | late_accuracy | both      # search defaults, overridable on the CLI
    samples: 20
    sampler: tpe | gp | cmaes | random
    repeat: 1                                  # search: seeds per suggestion
    factors: {factor: {level: {key: value}}}   # ablate: one factor varied at a time

Precedence inside a trial: method preset < base (+ --set) < method_overrides < factor level <
searched parameter < seed. Every error names the file and the key. A search scores on the
validation split of the task's held-out problems, a compare or ablate on the test split
(``SPLIT_OF_KIND``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import load_config, normalize, read_yaml, to_flat, valid_keys
from ..errors import UserError, closest, unknown
from ..methods import METHODS
from ..names import FINAL, FINAL_ACCURACY, LATE_ACCURACY

SPACES_DIR = Path(__file__).resolve().parents[2] / "search_spaces"
KINDS = ("compare", "search", "ablate")
PARAM_TYPES = ("float", "int", "categorical")
OBJECTIVES = ("tracking", "accuracy", "late_accuracy", "both")
SAMPLERS = ("tpe", "gp", "cmaes", "random")
TRIAL_INDEX = "__trial_index__"
"""Set by Ray's ``Repeater``: the repeat index of a trial, added to ``train.seed``."""
SAME_AS = "same_as"
"""Ablate: ``factor=level`` labels of other cells whose config is identical to this cell's (run once;
the results are reported under each label, see ``collect.collect_and_write``)."""
SPLIT_OF_KIND = {"search": "validation", "compare": "test", "ablate": "test"}
"""The held-out split each kind scores on (``task.split``): tuning never sees the test problems, and
the comparisons and ablations that report results are scored on them. A search space gets
``task.split: validation`` in its base; any other value in a space (base, overrides, factors,
params, ``--set``) is refused."""
RESUME_FROM = "__resume_from__"
"""Set by ``--resume`` on a trial that carries on an unfinished one: its newest intact checkpoint folder,
relative to the experiment folder (the trainable starts from it; see ``sweep.resume``)."""
RESUME_OF = "__resume_of__"
"""Set by ``--resume``: the Ray trial id of the unfinished trial this one replaces."""
RESUME_TICKET = "__resume__"
"""Set by ``--resume`` on a grid of explicit trial configs: which config (``index|label``)."""
BOOKKEEPING = ("factor", "variant", "__cell__", SAME_AS, TRIAL_INDEX, RESUME_FROM, RESUME_OF, RESUME_TICKET)
"""Keys of a trial config dict that are labels, not config keys; stripped before ``load_config``."""

_COMMON = ("kind", "description", "base", "seeds", "method_overrides")
_ALLOWED = {
    "compare": (*_COMMON, "methods", "primary"),
    "search": (*_COMMON, "method", "params", "objective", "samples", "sampler", "repeat"),
    "ablate": (*_COMMON, "method", "factors", "primary"),
}


@dataclass(frozen=True)
class SearchOptions:
    """How a search runs (CLI flags, defaults from the space)."""

    samples: int
    sampler: str
    objective: str
    repeat: int = 1
    seed: int = 0


@dataclass(frozen=True)
class ParamSpec:
    """One searched config key."""

    key: str
    type: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()


@dataclass(frozen=True)
class SearchSpace:
    """A validated search-space file; ``base`` holds flat dotted keys."""

    name: str
    path: Path
    kind: str
    description: str = ""
    base: dict[str, Any] = field(default_factory=dict)
    seeds: tuple[int, ...] = (0,)
    methods: tuple[str, ...] = ()
    method_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    params: tuple[ParamSpec, ...] = ()
    objective: str = "tracking"
    samples: int = 10
    sampler: str = "tpe"
    repeat: int = 1
    factors: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    primary: str = "final/pass@1"
    """compare/ablate: the one metric the report's Holm correction across methods is about
    (``report/paired.py``); every other metric is secondary."""
    file_base: dict[str, Any] = field(default_factory=dict)
    """``base`` as the file gives it, before the command line's overrides."""
    set_by: dict[str, str] = field(default_factory=dict)
    """Keys of ``base`` that the command line set, with the flag that set each (``--set k=v``)."""

    @property
    def method(self) -> str:
        """The single method of a search or ablation (the first for a compare)."""
        return self.methods[0]


def available() -> list[str]:
    """Names of the bundled search spaces."""
    return sorted(p.stem for p in SPACES_DIR.glob("*.yaml"))


def resolve_path(name_or_file: str) -> Path:
    """A bundled space name (``compare``) or a path to a YAML file."""
    path = Path(name_or_file).expanduser()
    if path.suffix in (".yaml", ".yml") or path.is_file():
        if not path.is_file():
            raise UserError(f"--space: file '{path}' does not exist")
        return path.resolve()
    bundled = SPACES_DIR / f"{name_or_file}.yaml"
    if bundled.is_file():
        return bundled
    raise UserError(f"--space: unknown search space '{name_or_file}'{closest(name_or_file, available())}; "
                    f"bundled: {', '.join(available())} (or give a .yaml file)")


def load_space(name_or_file: str, overrides: dict[str, Any] | None = None,
               labels: dict[str, str] | None = None) -> SearchSpace:
    """Read and validate a search-space file; ``overrides`` (dotted keys) replace ``base`` values.

    ``labels`` names the flag that carried each override (default ``--set key=value``): an error that
    only the override causes names that flag, one in the file names the file and key.
    """
    path = resolve_path(name_or_file)
    data = read_yaml(path)
    src = str(path)
    kind = data.get("kind")
    if kind not in KINDS:
        raise UserError(f"{src}: kind: expected one of {', '.join(KINDS)}, got {kind!r}")
    for key in data:
        if key not in _ALLOWED[kind]:
            raise UserError(f"{src}: unknown top-level key '{key}' for kind {kind}"
                            f"{closest(str(key), _ALLOWED[kind])}; allowed: {', '.join(_ALLOWED[kind])}")
    file_base = normalize(_mapping(data.get("base"), src, "base"), f"{src}: base")
    cli = normalize(overrides or {}, "--set")
    base = {**file_base, **cli}
    set_by = {k: (labels or {}).get(k) or f"--set {k}={v}" for k, v in cli.items()}
    if kind == "compare":
        methods = parse_methods(data.get("methods"), f"{src}: methods")
    else:
        methods = (_method(data.get("method", base.get("method", "grpo")), src, ": method"),)
        base["method"] = methods[0]
    split = SPLIT_OF_KIND[kind]
    if base.get("task.split", split) != split:
        where = set_by.get("task.split") or f"{src}: base: task.split"
        raise UserError(f"{where}: a {kind} space scores on the {split} split; "
                        f"allowed: {split} (or leave task.split out)")
    if kind == "search":
        base["task.split"] = split
    space = SearchSpace(
        name=path.stem, path=path, kind=kind, description=str(data.get("description", "")),
        base=base, seeds=_seeds(data.get("seeds", 1), src), methods=methods,
        method_overrides=_overrides(data.get("method_overrides"), src),
        params=_params(data.get("params"), src) if kind == "search" else (),
        objective=_one_of(data.get("objective", "tracking"), OBJECTIVES, src, "objective"),
        samples=_positive_int(data.get("samples", 10), src, "samples"),
        sampler=_one_of(data.get("sampler", "tpe"), SAMPLERS, src, "sampler"),
        repeat=_positive_int(data.get("repeat", 1), src, "repeat"),
        factors=_factors(data.get("factors"), src) if kind == "ablate" else {},
        primary=_primary(data.get("primary", "final/pass@1"), src),
        file_base=file_base, set_by=set_by,
    )
    if kind == "search" and not space.params:
        raise UserError(f"{src}: params: a search needs at least one parameter")
    if kind == "ablate" and not space.factors:
        raise UserError(f"{src}: factors: an ablation needs at least one factor")
    validate(space)
    return space


def with_changes(space: SearchSpace, **changes: Any) -> SearchSpace:
    """A copy with fields replaced (CLI --methods/--seeds/--steps), re-validated."""
    import dataclasses

    out = dataclasses.replace(space, **changes)
    validate(out)
    return out


# --- expansion -----------------------------------------------------------------------------------


def method_config(space: SearchSpace, method: str) -> dict[str, Any]:
    """Base keys of ``method``'s trials: base, the method, its overrides (no seed)."""
    return {**space.base, "method": method, **space.method_overrides.get(method, {})}


def grid_cells(space: SearchSpace) -> dict[str, dict[str, Any]]:
    """The grid of a compare/ablate space, without seeds: ``{label: trial keys}``.

    compare: one cell per method; ablate: one cell per distinct (factor, level) config, labelled
    ``factor=level``, with the ``factor``, ``variant`` and ``same_as`` bookkeeping keys.
    """
    if space.kind == "compare":
        return {m: method_config(space, m) for m in space.methods}
    if space.kind == "ablate":
        return _merge_identical(_ablation_cells(space))
    raise ValueError(f"grid_cells: a {space.kind} space has no grid")


def _ablation_cells(space: SearchSpace) -> dict[str, dict[str, Any]]:
    base = method_config(space, space.method)
    return {f"{factor}={level}": {**base, **keys, "factor": factor, "variant": level}
            for factor, levels in space.factors.items() for level, keys in levels.items()}


def _merge_identical(cells: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Run each distinct config once: a level equal to the base under several factors (e.g.
    ``anti_windup=on`` and ``tau=0.95``) is one cell whose ``same_as`` lists the other labels
    (``;``-separated, ``""`` when none). Runs are deterministic, so the result is the same."""
    first: dict[str, str] = {}
    out: dict[str, dict[str, Any]] = {}
    for label, cell in cells.items():
        key = repr(sorted(flat_trial_config(cell).items()))
        if key in first:
            owner = out[first[key]]
            owner[SAME_AS] = ";".join(filter(None, (owner[SAME_AS], label)))
        else:
            first[key] = label
            out[label] = {**cell, SAME_AS: ""}
    return out


def expand_trials(space: SearchSpace) -> list[dict[str, Any]]:
    """Every trial config of a compare/ablate space (cells x seeds), bookkeeping keys included."""
    return [{**cell, "train.seed": seed} for cell in grid_cells(space).values() for seed in space.seeds]


def search_base(space: SearchSpace) -> dict[str, Any]:
    """The constant keys of every search trial (the searched params are added per trial)."""
    return {**method_config(space, space.method), "train.seed": space.seeds[0]}


def trial_config(config: dict[str, Any]) -> dict[str, Any]:
    """Config keys of a Ray trial config: bookkeeping keys stripped, the repeat index added to the seed."""
    out = {k: v for k, v in config.items() if k not in BOOKKEEPING}
    if config.get(TRIAL_INDEX) is not None:
        out["train.seed"] = int(out.get("train.seed", 0)) + int(config[TRIAL_INDEX])
    return out


def flat_trial_config(config: dict[str, Any]) -> dict[str, Any]:
    """Every config value a trial runs with (``to_flat`` of the loaded config)."""
    return to_flat(load_config(trial_config(config)))


# --- validation ----------------------------------------------------------------------------------


def validate(space: SearchSpace) -> None:
    """Load every config the space can produce (search: each parameter at its bounds/choices)."""
    src = str(space.path)
    if not space.methods:
        raise UserError(f"{src}: methods: at least one method is needed")
    split = SPLIT_OF_KIND[space.kind]
    for method, keys in space.method_overrides.items():
        if keys.get("task.split", split) != split:
            raise UserError(f"{src}: method_overrides.{method}.task.split: a {space.kind} space "
                            f"scores on the {split} split; allowed: {split}")
    for factor, levels in space.factors.items():
        for level, keys in levels.items():
            if keys.get("task.split", split) != split:
                raise UserError(f"{src}: factors.{factor}.{level}.task.split: an ablation scores "
                                f"on the test split; allowed: {split}")
    if any(p.key == "task.split" for p in space.params):
        raise UserError(f"{src}: params.task.split: cannot be searched (a search scores on the "
                        "validation split)")
    if space.kind == "search":
        base = search_base(space)
        for p in space.params:
            if p.key in ("method", "train.seed"):
                raise UserError(f"{src}: params.{p.key}: cannot be searched (use methods/seeds)")
            for value in p.choices or (p.low, p.high):
                _check_config({**base, p.key: value}, f"{src}: params.{p.key}={value!r}", space)
        _check_config({**base, **{p.key: (p.choices[0] if p.choices else p.low) for p in space.params}},
                      f"{src}: params", space)
        return
    cells = _ablation_cells(space) if space.kind == "ablate" else grid_cells(space)
    for label, cell in cells.items():
        where = f"methods.{label}" if space.kind == "compare" else f"factors.{label.replace('=', '.')}"
        _check_config(trial_config({**cell, "train.seed": space.seeds[0]}), f"{src}: {where}", space)


def _check_config(data: dict[str, Any], where: str, space: SearchSpace) -> None:
    """Load a trial config and check its sizes against the model and machine; the error names the
    command-line flag when the flag's value alone is at fault, else ``where`` (file and key)."""
    try:
        check_trial(data)
    except UserError as exc:
        raise UserError(f"{_blame(data, exc, space) or where}: {exc}") from None


def check_trial(data: dict[str, Any]) -> None:
    from ..model.limits import check_limits

    check_limits(load_config(data))


def _blame(data: dict[str, Any], exc: UserError, space: SearchSpace) -> str | None:
    """The flag(s) that carried the failing value: the config passes with the file's own values for
    the keys the command line set (and still in force here), and fails with them."""
    carried = [k for k in space.set_by if k in data and (data[k] is space.base[k] or data[k] == space.base[k])]
    if not carried:
        return None
    restored = {k: v for k, v in data.items() if k not in carried}
    restored.update({k: space.file_base[k] for k in carried if k in space.file_base})
    try:
        check_trial(restored)
    except UserError:
        return None  # the file's config fails on its own: the file is to blame
    named = [k for k in carried if k in str(exc)] or carried  # in command-line order
    return ", ".join(space.set_by[k] for k in named)


def _mapping(value: Any, src: str, key: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise UserError(f"{src}: {key}: expected a mapping, got {value!r}")
    return value


def _method(value: Any, src: str, key: str) -> str:
    if value not in METHODS:
        raise UserError(f"{src}{key}: {unknown('method', str(value), METHODS)}")
    return str(value)


def parse_methods(value: Any, where: str = "--methods") -> tuple[str, ...]:
    """A list (or comma-separated string) of distinct method names."""
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, list) or not value:
        raise UserError(f"{where}: expected a non-empty list of methods ({', '.join(METHODS)})")
    methods = tuple(_method(m, "", where) for m in value)
    if len(set(methods)) != len(methods):
        raise UserError(f"{where}: a method is listed twice: {', '.join(methods)}")
    return methods


def _seeds(value: Any, src: str) -> tuple[int, ...]:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return tuple(range(value))
    if isinstance(value, list) and value and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        if len(set(value)) == len(value):
            return tuple(value)
    raise UserError(f"{src}: seeds: expected a positive count or a list of distinct ints, got {value!r}")


PRIMARY_FIXED = (f"{FINAL}/accuracy", LATE_ACCURACY, FINAL_ACCURACY)


def _primary(value: Any, src: str) -> str:
    """A metric a comparison can be decided on: ``final/pass@<k>``, ``final/accuracy`` (greedy),
    ``summary/late_accuracy`` or ``summary/final_accuracy``."""
    text = str(value)
    k = text.removeprefix("final/pass@")
    if text in PRIMARY_FIXED or (text.startswith("final/pass@") and k.isdigit() and int(k) >= 1):
        return text
    raise UserError(f"{src}: primary: '{text}' is not allowed{closest(text, PRIMARY_FIXED)}; "
                    f"allowed: final/pass@<k>, {', '.join(PRIMARY_FIXED)}")


def _positive_int(value: Any, src: str, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"{src}: {key}: expected a positive int, got {value!r}")
    return value


def _one_of(value: Any, allowed: tuple[str, ...], src: str, key: str) -> str:
    if value not in allowed:
        raise UserError(f"{src}: {key}: '{value}' is not allowed{closest(str(value), allowed)}; "
                        f"allowed: {', '.join(allowed)}")
    return str(value)


def _overrides(value: Any, src: str) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for method, keys in _mapping(value, src, "method_overrides").items():
        _method(method, src, ": method_overrides")
        flat = normalize(_mapping(keys, src, f"method_overrides.{method}"), f"{src}: method_overrides.{method}")
        if "method" in flat:
            raise UserError(f"{src}: method_overrides.{method}: cannot change 'method'")
        out[str(method)] = flat
    return out


def _factors(value: Any, src: str) -> dict[str, dict[str, dict[str, Any]]]:
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for factor, levels in _mapping(value, src, "factors").items():
        where = f"factors.{factor}"
        levels = _mapping(levels, src, where)
        if len(levels) < 2:
            raise UserError(f"{src}: {where}: a factor needs at least two levels")
        out[str(factor)] = {}
        for level, keys in levels.items():
            if not isinstance(level, str):
                raise UserError(f"{src}: {where}: level name {level!r} must be a string "
                                "(quote 'on'/'off'/'yes'/'no': YAML reads them as booleans)")
            out[str(factor)][level] = normalize(_mapping(keys, src, f"{where}.{level}"), f"{src}: {where}.{level}")
    return out


def _params(value: Any, src: str) -> tuple[ParamSpec, ...]:
    allowed = valid_keys()
    specs = []
    for key, spec in _mapping(value, src, "params").items():
        key = str(key).replace("/", ".")
        where = f"{src}: params.{key}"
        if key not in allowed:
            raise UserError(f"{where}: unknown config key{closest(key, allowed)}")
        spec = _mapping(spec, src, f"params.{key}")
        kind = spec.get("type")
        if kind not in PARAM_TYPES:
            raise UserError(f"{where}: unknown param type {kind!r}; allowed: {', '.join(PARAM_TYPES)}")
        extra = set(spec) - ({"type", "choices"} if kind == "categorical" else {"type", "low", "high", "log"})
        if extra:
            raise UserError(f"{where}: unexpected field(s) {', '.join(sorted(map(str, extra)))} for type {kind}")
        specs.append(_categorical(key, spec, where) if kind == "categorical" else _range(key, kind, spec, where))
    return tuple(specs)


def _categorical(key: str, spec: dict[str, Any], where: str) -> ParamSpec:
    choices = spec.get("choices")
    if not isinstance(choices, list) or not choices:
        raise UserError(f"{where}: categorical needs a non-empty list 'choices'")
    if not all(isinstance(c, (str, int, float, bool)) for c in choices):
        raise UserError(f"{where}: choices must be numbers, strings or booleans")
    return ParamSpec(key, "categorical", choices=tuple(choices))


def _range(key: str, kind: str, spec: dict[str, Any], where: str) -> ParamSpec:
    low, high, log = spec.get("low"), spec.get("high"), spec.get("log", False)
    for name, v in (("low", low), ("high", high)):
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        if not ok or (kind == "int" and not float(v).is_integer()):
            raise UserError(f"{where}: {name}: expected a finite {kind}, got {v!r}")
    if not low < high:
        raise UserError(f"{where}: empty range: low ({low}) must be < high ({high})")
    if not isinstance(log, bool):
        raise UserError(f"{where}: log: expected true or false, got {log!r}")
    if log and low <= 0:
        raise UserError(f"{where}: log: a log range needs low > 0, got {low}")
    cast = int if kind == "int" else float
    return ParamSpec(key, kind, low=cast(low), high=cast(high), log=log)
