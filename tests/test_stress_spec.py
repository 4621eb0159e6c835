"""Workload files: the schema, error messages with file/line/column/field, compilation to a program."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from harness import spec
from harness.spec.validate import SCHEMA_PATH

WORKLOADS = Path(__file__).resolve().parent.parent / "workloads"
GOOD = """\
name: ok
mix: {alloc: 3, free: 1}
sizes:
  dist: uniform
  min: 16
  max: 4k
"""


def errors(text: str, tmp_path: Path, use_jsonschema: bool) -> list[str]:
    path = tmp_path / "w.yaml"
    path.write_text(text)
    with pytest.raises(spec.SpecError) as info:
        spec.load(path, use_jsonschema=use_jsonschema)
    return [str(i) for i in info.value.issues]


both = pytest.mark.parametrize("use_jsonschema", [True, False], ids=["jsonschema", "fallback"])


def test_schema_is_valid_json_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(json.loads(SCHEMA_PATH.read_text()))


def test_shipped_workloads_load() -> None:
    names = {spec.load(p).name for p in sorted(WORKLOADS.glob("*.yaml"))}
    assert len(names) >= 9
    for required in (
        "steady-small",
        "mixed-sizes",
        "cross-thread",
        "burst-growth",
        "paced-growth",
        "critical-exhaustion",
        "syscall-interference",
        "fork-storm",
        "fault-injection",
    ):
        assert required in names


@both
def test_wrong_type(tmp_path: Path, use_jsonschema: bool) -> None:
    got = errors(GOOD + "threads: two\n", tmp_path, use_jsonschema)
    assert got == [f'{tmp_path}/w.yaml:7:10: threads: expected integer, got string "two"']


@both
def test_a_number_yaml_reads_as_text_says_how_to_write_it(tmp_path: Path, use_jsonschema: bool) -> None:
    """YAML 1.1 (PyYAML) reads 1e9 and 1e+9 as strings (it wants a dot: 1.0e+9): "expected number, got
    string "1e9"" left the user sure that 1e9 is a number."""
    got = errors(GOOD + "ops: 1e6\nrate: 2e+5\n", tmp_path, use_jsonschema)
    assert got == [
        f'{tmp_path}/w.yaml:7:6: ops: expected integer, got string "1e6" (YAML reads it as text: write '
        "1000000)",
        f'{tmp_path}/w.yaml:8:7: rate: expected number, got string "2e+5" (YAML reads it as text: write '
        "200000 or 2.0e+5)",
    ]


@both
def test_unknown_key(tmp_path: Path, use_jsonschema: bool) -> None:
    got = errors(
        GOOD.replace("mix: {alloc: 3, free: 1}", "mix: {alloc: 3, frees: 1}"), tmp_path, use_jsonschema
    )
    assert len(got) == 1
    assert got[0].startswith(
        f"{tmp_path}/w.yaml:2:17: mix.frees: unknown key 'frees' (allowed: aligned, alloc,"
    )
    assert "free, realloc" in got[0]


@both
def test_unknown_keys_that_are_not_strings(tmp_path: Path, use_jsonschema: bool) -> None:
    # found by `kpool fuzz workload_yaml` in the default campaign: an int key beside a string key
    # made sorting the unknown keys raise TypeError instead of SpecError
    got = errors(
        GOOD.replace("mix: {alloc: 3, free: 1}", "mix: {alloc: 3, free: 1, 0: 1, zz: 2}"),
        tmp_path,
        use_jsonschema,
    )
    assert any("unknown key '0'" in e for e in got), got
    assert any("unknown key 'zz'" in e for e in got), got


@both
def test_negative_size(tmp_path: Path, use_jsonschema: bool) -> None:
    got = errors(GOOD.replace("min: 16", "min: -16"), tmp_path, use_jsonschema)
    assert got == [
        f"{tmp_path}/w.yaml:5:8: sizes.min: negative size -16: a size is a number of bytes >= 0, "
        "or a string like '64k'"
    ]


@both
def test_missing_field(tmp_path: Path, use_jsonschema: bool) -> None:
    got = errors(GOOD.replace("name: ok\n", ""), tmp_path, use_jsonschema)
    assert got == [f"{tmp_path}/w.yaml:1:1: name: missing required field 'name'"]


@both
def test_bad_enum_names_allowed_values(tmp_path: Path, use_jsonschema: bool) -> None:
    got = errors(GOOD + "verify: most\n", tmp_path, use_jsonschema)
    assert got == [f'{tmp_path}/w.yaml:7:9: verify: "most" is not allowed (allowed: full, ends, none)']


def test_distribution_rules(tmp_path: Path) -> None:
    got = errors(GOOD.replace("min: 16", "median: 16"), tmp_path, True)
    assert f"{tmp_path}/w.yaml:4:3: sizes: dist uniform needs field 'min' (it uses: min, max)" in got
    assert any("sizes.median: field 'median' does not apply to dist uniform" in g for g in got)
    got = errors(GOOD.replace("min: 16", "min: 8k"), tmp_path, True)
    assert got == [f"{tmp_path}/w.yaml:5:8: sizes.min: min 8k is above max 4k"]


def test_unknown_pool_option(tmp_path: Path) -> None:
    got = errors(GOOD + "pool: {primary_initial: 1m, primary_maks: 2m}\n", tmp_path, True)
    assert len(got) == 1
    assert got[0].startswith(f"{tmp_path}/w.yaml:7:29: pool.primary_maks: unknown pool option 'primary_maks'")
    assert "primary_max" in got[0]


def test_yaml_syntax_error_has_a_position(tmp_path: Path) -> None:
    got = errors("name: [x\nmix: 1\n", tmp_path, True)
    assert got[0].startswith(f"{tmp_path}/w.yaml:2:")
    assert "YAML syntax" in got[0]


def test_compile_to_program(tmp_path: Path) -> None:
    text = (
        GOOD
        + "pool: {daemon: false, primary_initial: 1m}\ninterference: [{kind: mmap, rate: 10, size: 64k}]\n"
    )
    wl = spec.load_text(text, "w.yaml")
    prog = wl.program().splitlines()
    assert "conf=daemon:off,primary_initial:1m" in prog
    assert "ops=alloc:3,free:1" in prog
    assert "size=uniform:16:4096" in prog
    assert "interfere=mmap,rate=10,size=65536" in prog
    assert not any(line.startswith("interfere=") for line in wl.program(interference=False).splitlines())
    assert "allocator=malloc" in wl.program(allocator="jemalloc").splitlines()


@both
def test_messages_use_the_right_article(tmp_path: Path, use_jsonschema: bool) -> None:
    assert errors("- a\n- b\n", tmp_path, use_jsonschema) == [
        f"{tmp_path}/w.yaml:1:1: a workload is a mapping of fields, got an array"
    ]
    assert errors("7\n", tmp_path, use_jsonschema) == [
        f"{tmp_path}/w.yaml:1:1: a workload is a mapping of fields, got an integer"
    ]
    got = errors(GOOD.replace("mix: {alloc: 3, free: 1}", "mix: [alloc]"), tmp_path, use_jsonschema)
    assert got == [f"{tmp_path}/w.yaml:2:6: mix: expected object, got an array"]
    got = errors(GOOD + "verify: [full]\n", tmp_path, use_jsonschema)
    assert got == [f"{tmp_path}/w.yaml:7:9: verify: an array is not allowed (allowed: full, ends, none)"]
    got = errors(GOOD.replace("min: 16", "min: {a: 1}"), tmp_path, use_jsonschema)
    assert got == [
        f"{tmp_path}/w.yaml:5:8: sizes.min: expected a size (bytes >= 0, or a string like '64k'), "
        "got an object"
    ]


@both
def test_name_longer_than_the_driver_takes(tmp_path: Path, use_jsonschema: bool) -> None:
    got = errors(GOOD.replace("name: ok", "name: " + "n" * 128), tmp_path, use_jsonschema)
    assert got == [f"{tmp_path}/w.yaml:1:7: name: 128 characters, more than the 127 allowed"]
