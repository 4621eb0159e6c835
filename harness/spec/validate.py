"""Check a workload against the published schema (workloads/schema.json) and the rules a schema cannot
say (which fields a size distribution needs, ops or duration, min <= max, pool option names).

The schema is a `oneOf` of two kinds: an op-stream workload ($defs/opstream) and a program workload
($defs/program, harness/spec/program.py). A document with the key `program` is a program workload and
is checked against that kind alone, so that its errors name its own fields (not "matches neither").

jsonschema does the schema part when it is installed; otherwise a small checker of the keywords the
schema uses. Both feed the same messages: every Issue names the file, line, column, field and, where
there is a choice, the allowed values.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

from harness import paths
from harness.errors import KpoolError
from harness.spec.marks import Located, Path

# The schema is published in workloads/ (for editors); a wheel ships that folder (harness/paths.py).
SCHEMA_PATH = paths.workloads() / "schema.json"
SIZE_RE = re.compile(r"^([0-9]+)([kKmMgG]?)[bB]?$")
U64_MAX = 2**64 - 1  # the driver's integers (strtoull)
SIZE_CEILING = 2**32 - 1  # sizes in the driver's step table are 32 bits (program.c SIZE_CEIL)
DEFAULT_TIME_LIMIT_S = 60.0  # an op-stream workload's time_limit_s when it gives none (the schema's default)
# A worker with duration_ms runs that long and then writes its result; its pool's start (segments mapped,
# pre-faulted) and the result take milliseconds to about a second on a loaded machine: a duration within
# this of the time limit is killed as a hang.
DURATION_MARGIN_MS = 1000
LOGNORMAL_MAX = 64 << 20  # the driver's default upper bound of a lognormal distribution
DIST_FIELDS: dict[str, tuple[str, ...]] = {
    "fixed": ("size",),
    "uniform": ("min", "max"),
    "loguniform": ("min", "max"),
    "lognormal": ("median", "sigma"),
    "list": ("sizes",),
}
DIST_OPTIONAL: dict[str, tuple[str, ...]] = {"lognormal": ("min", "max")}


@dataclass(frozen=True)
class Issue:
    file: str
    line: int
    column: int
    field: str  # dotted path, "" for the document
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}"
        return f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"


class SpecError(KpoolError):
    """A workload file is invalid; `issues` lists every problem found, in file order."""

    exit_code = 2  # a mistake in the user's input, as ConfigError

    def __init__(self, issues: Sequence[Issue]) -> None:
        self.issues = sorted(issues, key=lambda i: (i.file, i.line, i.column))
        super().__init__("invalid workload\n" + "\n".join(f"  {i}" for i in self.issues))


@cache
def schema() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(SCHEMA_PATH.read_text())
    return loaded


KINDS = ("opstream", "program")


def kind_of(data: Mapping[str, Any]) -> str:
    """The workload kind of a document (a mapping): program when it has the key `program`."""
    return "program" if "program" in data else "opstream"


def kind_schema(kind: str) -> dict[str, Any]:
    """The published schema narrowed to one kind (its $defs kept, for the references)."""
    if kind not in KINDS:
        raise ValueError(f"unknown workload kind {kind!r}")
    narrowed = {k: v for k, v in schema().items() if k != "oneOf"}
    narrowed["$ref"] = f"#/$defs/{kind}"
    return narrowed


# The longest key or text value a message shows whole: a longer one is cut there, its length said.
SHOW_MAX = 60


def cut(text: str) -> str:
    """text, or its first SHOW_MAX characters and its length: a key or a value of 100,000 characters
    made a message of as many (twice, for an unknown key)."""
    return text if len(text) <= SHOW_MAX else f"{text[:SHOW_MAX]}… ({len(text)} characters)"


def dotted(path: Path) -> str:
    out = ""
    for part in path:
        part = part if isinstance(part, int) else cut(str(part))
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def size_bytes(value: int | str) -> int:
    """A schema-valid size (int, or a string with a k/m/g suffix) in bytes."""
    if isinstance(value, int):
        return value
    m = SIZE_RE.match(value)
    if not m:
        raise ValueError(f"not a size: {value!r}")
    return int(m.group(1)) << {"": 0, "k": 10, "m": 20, "g": 30}[m.group(2).lower()]


# ---- schema errors, from jsonschema or from the fallback ---------------------------------------------


@dataclass(frozen=True)
class RawError:
    path: Path
    validator: str
    value: Any  # the keyword's value in the schema
    schema: Mapping[str, Any]
    instance: Any
    text: str = ""


def _type_name(v: Any) -> str:
    if isinstance(v, bool):
        return "boolean"
    return {int: "integer", float: "number", str: "string", list: "array", dict: "object"}.get(
        type(v), type(v).__name__
    )


def _a(type_name: str) -> str:
    """ "an array", "a string": the type name with its article."""
    return f"{'an' if type_name[:1] in 'aeiou' else 'a'} {type_name}"


def _show(v: Any) -> str:
    """A scalar as JSON ("two", 3, null), a text as written (not JSON's \\u escapes) and cut at SHOW_MAX
    characters; anything else by its kind ("an array")."""
    if isinstance(v, str) and len(v) > SHOW_MAX:
        return f'{json.dumps(v[:SHOW_MAX], ensure_ascii=False)[:-1]}…" ({len(v)} characters)'
    if isinstance(v, str | int | float | bool) or v is None:
        return json.dumps(v, ensure_ascii=False)
    return _a(_type_name(v))


# A number in exponent notation without a dot or an exponent sign ("1e9", "2e+5"): YAML 1.1, which PyYAML
# reads, takes it for text (its floats are like 1.0e+9).
_EXPONENT_TEXT = re.compile(r"([-+]?[0-9]+(?:\.[0-9]*)?)[eE]([-+]?[0-9]+)")


def _number_as_text(text: str, want: str) -> str:
    """How to write a number YAML read as text, for an "expected number" message; "" for other text."""
    m = _EXPONENT_TEXT.fullmatch(text.strip())
    if not m or not ("integer" in want or "number" in want):
        return ""
    value = float(text)
    mantissa, exponent = m[1] if "." in m[1] else m[1] + ".0", m[2] if m[2][0] in "+-" else "+" + m[2]
    plain = f"{int(value)}" if value.is_integer() and abs(value) < 1e18 else ""
    if "number" in want:
        forms = [f for f in (plain, f"{mantissa}e{exponent}") if f]
    elif plain:
        forms = [plain]
    else:
        return ""
    return f" (YAML reads it as text: write {' or '.join(forms)})"


# The longest schema message shown as it is (a value echoed in it is cut there): a line or two.
MAX_MESSAGE = 200


def _messages(err: RawError) -> Iterator[tuple[Path, bool, str]]:
    """(path, point at the key?, message) for one schema error."""
    v, inst, path = err.value, err.instance, err.path
    if err.schema.get("x-kpool-kind") == "exit_status":
        yield path, False, f'expected "glibc" or an exit status 0-255, got {_show(inst)}'
    elif err.schema.get("x-kpool-kind") == "size":
        if isinstance(inst, int | float) and not isinstance(inst, bool) and inst < 0:
            yield (
                path,
                False,
                f"negative size {inst}: a size is a number of bytes >= 0, or a string like '64k'",
            )
        else:
            yield path, False, f"expected a size (bytes >= 0, or a string like '64k'), got {_show(inst)}"
    elif err.validator == "type":
        want = " or ".join(v) if isinstance(v, list) else v
        scalar = isinstance(inst, str | int | float | bool)
        hint = _number_as_text(inst, want) if isinstance(inst, str) else ""
        yield (
            path,
            False,
            f"expected {want}, got {f'{_type_name(inst)} ' if scalar else ''}{_show(inst)}{hint}",
        )
    elif err.validator == "additionalProperties" and v is False:
        allowed = sorted(err.schema.get("properties", {}))
        for key in sorted(set(inst) - set(allowed), key=str):  # YAML keys need not be strings
            yield (*path, key), True, f"unknown key '{cut(str(key))}' (allowed: {', '.join(allowed)})"
    elif err.validator == "required":
        for key in v:
            if key not in inst:
                yield (*path, key), False, f"missing required field '{key}'"
    elif err.validator == "enum":
        yield path, False, f"{_show(inst)} is not allowed (allowed: {', '.join(str(x) for x in v)})"
    elif err.validator == "minimum":
        yield path, False, f"{_show(inst)} is below the minimum {v}"
    elif err.validator == "exclusiveMinimum":
        yield path, False, f"{_show(inst)} must be greater than {v}"
    elif err.validator == "maximum":
        yield path, False, f"{_show(inst)} is above the maximum {v}"
    elif err.validator == "minLength":
        yield path, False, "must not be empty"
    elif err.validator == "minItems":
        yield path, False, f"at least {v} item{'s' if v != 1 else ''} needed"
    elif err.validator == "const":
        yield path, False, f"{_show(inst)} is not allowed (allowed: {v})"
    elif err.validator == "maxLength":
        yield path, False, f"{len(inst)} characters, more than the {v} allowed"
    elif err.validator == "maxItems":  # jsonschema's text echoes the whole list
        yield path, False, f"{len(inst)} items, more than the {v} allowed"
    elif err.validator == "pattern":
        yield path, False, f"{_show(inst)} does not match the pattern {v}"
    else:  # jsonschema's own text, which may echo a value of any size: one line of the terminal at most
        text = err.text or f"fails the schema's '{err.validator}' rule"
        yield path, False, text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 1] + "…"


def _jsonschema_errors(data: Any, kind: str) -> list[RawError] | None:
    try:
        import jsonschema
    except ImportError:
        return None
    validator = jsonschema.Draft202012Validator(kind_schema(kind))
    return [
        RawError(tuple(e.absolute_path), str(e.validator), e.validator_value, e.schema, e.instance, e.message)
        for e in validator.iter_errors(data)
    ]


def _fallback_errors(value: Any, sch: Mapping[str, Any], path: Path = ()) -> Iterator[RawError]:
    """The keywords workloads/schema.json uses, checked without jsonschema."""
    if "$ref" in sch:
        name = sch["$ref"].rsplit("/", 1)[-1]
        yield from _fallback_errors(value, schema()["$defs"][name], path)
        return
    if "oneOf" in sch:
        matches = sum(1 for s in sch["oneOf"] if not any(_fallback_errors(value, s, path)))
        if matches != 1:
            yield RawError(path, "oneOf", sch["oneOf"], sch, value)
        return
    want = sch.get("type")
    if want is not None:
        kinds = want if isinstance(want, list) else [want]
        got = _type_name(value)
        if not any(k == got or (k == "number" and got == "integer") for k in kinds):
            yield RawError(path, "type", want, sch, value)
            return
    if "enum" in sch and value not in sch["enum"]:
        yield RawError(path, "enum", sch["enum"], sch, value)
    if "const" in sch and (value != sch["const"] or type(value) is not type(sch["const"])):
        yield RawError(path, "const", sch["const"], sch, value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in sch and value < sch["minimum"]:
            yield RawError(path, "minimum", sch["minimum"], sch, value)
        if "maximum" in sch and value > sch["maximum"]:
            yield RawError(path, "maximum", sch["maximum"], sch, value)
        if "exclusiveMinimum" in sch and value <= sch["exclusiveMinimum"]:
            yield RawError(path, "exclusiveMinimum", sch["exclusiveMinimum"], sch, value)
    if isinstance(value, str) and len(value) < sch.get("minLength", 0):
        yield RawError(path, "minLength", sch["minLength"], sch, value)
    if isinstance(value, str) and len(value) > sch.get("maxLength", len(value)):
        yield RawError(path, "maxLength", sch["maxLength"], sch, value)
    if isinstance(value, str) and "pattern" in sch and not re.search(sch["pattern"], value):
        yield RawError(path, "pattern", sch["pattern"], sch, value)
    if isinstance(value, list):
        if len(value) < sch.get("minItems", 0):
            yield RawError(path, "minItems", sch["minItems"], sch, value, "too few items")
        if len(value) > sch.get("maxItems", len(value)):
            yield RawError(path, "maxItems", sch["maxItems"], sch, value, "too many items")
        for i, item in enumerate(value):
            yield from _fallback_errors(item, sch.get("items", {}), (*path, i))
    if isinstance(value, dict):
        if len(value) < sch.get("minProperties", 0):
            yield RawError(path, "minProperties", sch["minProperties"], sch, value, "must not be empty")
        missing = [k for k in sch.get("required", ()) if k not in value]
        if missing:
            yield RawError(path, "required", sch["required"], sch, value)
        props = sch.get("properties", {})
        extra = sch.get("additionalProperties", True)
        if extra is False and set(value) - set(props):
            yield RawError(path, "additionalProperties", False, sch, value)
        for key, item in value.items():
            if key in props:
                yield from _fallback_errors(item, props[key], (*path, key))
            elif isinstance(extra, dict):
                yield from _fallback_errors(item, extra, (*path, key))


def schema_errors(data: Any, use_jsonschema: bool = True, kind: str = "opstream") -> list[RawError]:
    """The schema's errors of a document checked as a workload of this kind."""
    found = _jsonschema_errors(data, kind) if use_jsonschema else None
    return found if found is not None else list(_fallback_errors(data, kind_schema(kind)))


# ---- rules beyond the schema -------------------------------------------------------------------------


def _dist_rules(d: Mapping[str, Any], path: Path) -> Iterator[tuple[Path, bool, str]]:
    kind = str(d.get("dist"))
    need: tuple[str, ...] = DIST_FIELDS.get(kind, ())
    allowed = ("dist", *need, *DIST_OPTIONAL.get(kind, ()))
    for key in need:
        if key not in d:
            yield path, False, f"dist {kind} needs field '{key}' (it uses: {', '.join(allowed[1:])})"
    for key in d:
        if key not in allowed:
            yield (
                (*path, key),
                True,
                f"field '{key}' does not apply to dist {kind} (it uses: {', '.join(allowed[1:])})",
            )
    if "min" in d and "max" in d and size_bytes(d["min"]) > size_bytes(d["max"]):
        yield (*path, "min"), False, f"min {d['min']} is above max {d['max']}"
    if kind == "loguniform" and "min" in d and size_bytes(d["min"]) < 1:
        yield (*path, "min"), False, "loguniform needs min >= 1"
    if kind == "lognormal" and "median" in d and size_bytes(d["median"]) < 1:
        yield (*path, "median"), False, "lognormal needs median >= 1"
    if kind == "lognormal" and ("min" in d) != ("max" in d):
        # the driver takes both bounds or neither: the missing one is its default (1 or 64m)
        low, high = size_bytes(d.get("min", 1)), size_bytes(d.get("max", LOGNORMAL_MAX))
        if low > high:
            key = "min" if "min" in d else "max"
            yield (*path, key), False, f"{d[key]} leaves min {low} above max {high} (64m when not given)"
    for key in ("size", "min", "max", "median"):
        if key in d and size_bytes(d[key]) > SIZE_CEILING:
            yield (*path, key), False, f"{d[key]} is above the driver's 4g ceiling"
    for i, item in enumerate(d.get("sizes") or ()):
        if size_bytes(item["size"]) > SIZE_CEILING:
            yield (*path, "sizes", i, "size"), False, f"{item['size']} is above the driver's 4g ceiling"
    if kind == "list" and d.get("sizes"):
        yield from _weight_rules([item.get("weight", 1) for item in d["sizes"]], (*path, "sizes"))


def _weight_rules(weights: Sequence[float], path: Path) -> Iterator[tuple[Path, bool, str]]:
    """kpdrive adds a list's weights up in a double, in order, and divides each by the total: a total of
    0 divides by zero, and one past the largest double is infinite and makes every weight 0 (the run
    went ahead with the last op or size alone). Added here as it adds them. A weight that is itself no
    finite number (.nan, .inf) is said by _nonfinite: its total says nothing more (a NaN total was called
    'too large for the driver' beside it)."""
    if any(isinstance(w, float) and not math.isfinite(w) for w in weights):
        return
    total = 0.0
    for weight in weights:
        try:
            total += float(weight)
        except OverflowError:  # an integer past the largest double: the driver reads it as infinite
            total = math.inf
    if total <= 0:
        yield path, False, "the weights add up to 0; give at least one a positive weight"
    elif not math.isfinite(total):
        yield path, False, "the weights add up to a number too large for the driver; scale them down"


def _nonfinite(value: Any, path: Path) -> Iterator[tuple[Path, bool, str]]:
    """Every number of a workload must be finite (YAML's .inf and .nan pass a minimum check): the driver
    cannot take one, an SLO bound of NaN fails every verdict and one of infinity holds every verdict, and
    either would reach stress.json as NaN or Infinity, which strict JSON readers refuse."""
    if isinstance(value, float) and not math.isfinite(value):
        yield path, False, f"{value} is not a finite number"
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _nonfinite(item, (*path, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _nonfinite(item, (*path, i))


# What a stress run writes in its folder beside the workloads' folders (harness/stress/runner.py): a
# workload named so would take its place.
RUN_FILES = ("stress.json", "run.lock")


def _name_rules(data: Mapping[str, Any]) -> Iterator[tuple[Path, bool, str]]:
    """The name is the workload's folder in its run (the schema keeps it a plain name, not '.' or '..')."""
    if data.get("name") in RUN_FILES:
        yield (
            ("name",),
            False,
            f"{data['name']!r} is a file every run folder holds; name the workload otherwise",
        )


def _driver_rules(data: Mapping[str, Any]) -> Iterator[tuple[Path, bool, str]]:
    """What kpdrive's program parser refuses and the schema cannot say (allocator/driver/program.c)."""
    last_seed = data.get("seed", 1) + data.get("processes", 1) - 1
    if last_seed > U64_MAX:
        yield (
            ("seed",),
            False,
            f"worker {data.get('processes', 1) - 1} would run with seed {last_seed}, above the driver's "
            f"limit {U64_MAX} (worker i runs with seed + i)",
        )
    for i, item in enumerate(data.get("interference", ())):
        if "size" in item and size_bytes(item["size"]) > U64_MAX:
            yield ("interference", i, "size"), False, f"{item['size']} is above the driver's limit {U64_MAX}"
    # The program is one key=value a line: a line break inside a value would start a line of its own.
    texts: list[tuple[Path, Any]] = [(("faults",), data.get("faults"))]
    texts += [(("pool", k), v) for k, v in data.get("pool", {}).items()]
    for path, text in texts:
        if isinstance(text, str) and ("\n" in text or "\r" in text or "\0" in text):
            yield (
                path,
                False,
                f"{json.dumps(text)}: a line break or NUL character cannot be passed to the driver",
            )


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def rule_errors(
    data: Mapping[str, Any], pool_options: Sequence[str] | None
) -> Iterator[tuple[Path, bool, str]]:
    if "ops" in data and "duration_ms" in data:
        yield ("duration_ms",), True, "give ops or duration_ms, not both"
    duration: Any = data.get("duration_ms")
    limit: Any = data.get("time_limit_s", DEFAULT_TIME_LIMIT_S)
    if _number(duration) and _number(limit) and duration + DURATION_MARGIN_MS > limit * 1000:
        given = "" if "time_limit_s" in data else " (the default)"
        yield (
            ("duration_ms",),
            False,
            f"{duration} ms is not within the time limit, time_limit_s {limit:g}{given}, less a second "
            "for the worker's start and result: every worker would be killed as a hang (raise time_limit_s)",
        )
    for key in ("sizes", "realloc_sizes"):
        if isinstance(data.get(key), dict):
            yield from _dist_rules(data[key], (key,))
    if data.get("mix"):
        yield from _weight_rules(list(data["mix"].values()), ("mix",))
    yield from _driver_rules(data)
    if pool_options is not None:
        for key in data.get("pool", {}):
            if key not in pool_options:
                yield ("pool", key), True, f"unknown pool option '{key}' (allowed: {', '.join(pool_options)})"


def check(
    located: Located,
    file: str,
    pool_options: Sequence[str] | None,
    use_jsonschema: bool = True,
    rules: Callable[[Mapping[str, Any]], Iterator[tuple[Path, bool, str]]] | None = None,
) -> None:
    """Raise SpecError listing every problem of the document, or return. A program workload's rules
    beyond the schema are `rules` (harness/spec/program.py gives them; the op-stream rules otherwise)."""
    data = located.data
    if not isinstance(data, dict):
        got = "an empty file" if data is None else _a(_type_name(data))
        raise SpecError([Issue(file, 1, 1, "", f"a workload is a mapping of fields, got {got}")])
    kind = kind_of(data)
    issues = []
    for err in schema_errors(data, use_jsonschema, kind):
        for path, at_key, message in _messages(err):
            pos = located.where(path, key=at_key)
            issues.append(Issue(file, pos.line, pos.column, dotted(path), message))
    if not issues:  # the rules assume a schema-valid document
        found = rules(data) if rules is not None else rule_errors(data, pool_options)
        for path, at_key, message in itertools.chain(_nonfinite(data, ()), _name_rules(data), found):
            pos = located.where(path, key=at_key)
            issues.append(Issue(file, pos.line, pos.column, dotted(path), message))
    if issues:
        raise SpecError(issues)
