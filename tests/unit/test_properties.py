"""Property-based tests (issue 12): config validation, the swarm CSV readers and the
archive verifier, on generated malformed names, numbers, files and members.

Every test is seeded (derandomize) and bounded (max_examples), and keeps no example
database, so a run is the same run every time; the whole file takes seconds.
"""

from __future__ import annotations

import contextlib
import csv
import io
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from regmix import archive, files
from regmix.config import (
    RANDOM_CANDIDATE_PREFIX,
    RESERVED_CANDIDATE_NAMES,
    RESERVED_DOMAIN_NAMES,
    ConfigError,
    load_schema,
    validate_config,
)
from regmix.regression import read_swarm_csvs
from tests.helpers.archives import crafted_archive


@contextlib.contextmanager
def fresh_dir() -> Iterator[Path]:
    """A new folder per generated example (pytest's tmp_path is one per test)."""
    with tempfile.TemporaryDirectory(prefix="regmix-prop-") as folder:
        yield Path(folder)


# --------------------------------------------------------------------------- config

NAME_TAIL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_"
valid_names = st.from_regex(r"\A[A-Za-z][A-Za-z0-9_]{0,63}\Z")
valid_domains = valid_names.filter(lambda n: n.lower() not in RESERVED_DOMAIN_NAMES)
valid_candidates = valid_names.filter(
    lambda n: n.lower() not in RESERVED_CANDIDATE_NAMES and not n.lower().startswith(RANDOM_CANDIDATE_PREFIX)
)


def _with_inserted(piece: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """A valid name with `piece` put at its start, its end, or somewhere inside."""
    at = st.sampled_from([0, -1]) | st.integers(1, 63)
    return st.tuples(valid_names, piece, at).map(lambda t: _splice(t[0], t[1], t[2]))


def _splice(name: str, piece: str, at: int) -> str:
    at = len(name) if at == -1 else at % (len(name) + 1)
    return name[:at] + piece + name[at:]


malformed_names = st.one_of(
    st.just(""),
    _with_inserted(st.sampled_from(["/", "\\", ".", "..", "../", " ", "\t", "-", ":", "*", "$", "'"])),
    _with_inserted(st.sampled_from(["\n", "\r\n", "\x00"]) | st.characters(max_codepoint=31)),  # controls
    _with_inserted(st.characters(min_codepoint=128, exclude_categories=["Cs"])),  # unicode, incl. look-alikes
    st.tuples(st.sampled_from("0123456789_"), st.text(NAME_TAIL, max_size=10)).map("".join),  # bad first char
    st.tuples(st.sampled_from(NAME_TAIL[:52]), st.text(NAME_TAIL, min_size=64, max_size=90)).map("".join),  # long
    st.tuples(st.sampled_from(["../", "/", "./"]), valid_names).map("".join),
)

# huggingface: a source whose domains are whatever `domain_map` names, with no file to check
SOURCE = {"kind": "huggingface", "name_or_path": "corpus", "domain_column": "set"}


def config_with(domains: list[str], named: dict[str, dict] | None = None) -> dict:
    return {
        "domains": domains,
        "data": {"source": {**SOURCE, "domain_map": {f"set{i}": d for i, d in enumerate(domains)}}},
        "regression": {"target": "mean"},
        "large": {"named": named or {}},
    }


def refusal(config: dict) -> str:
    with pytest.raises(ConfigError) as err:
        validate_config(config)
    message = str(err.value)
    assert "\n" not in message, message
    return message


def _any_case(name: str) -> st.SearchStrategy[str]:
    return st.lists(st.booleans(), min_size=len(name), max_size=len(name)).map(
        lambda upper: "".join(c.upper() if u else c for c, u in zip(name, upper, strict=True))
    )


@settings(max_examples=150, deadline=None, derandomize=True, database=None)
@example(bad="code\n", others=["alpha"], at=0).via("Python's $ matches before a final newline")
@given(
    bad=malformed_names,
    others=st.lists(valid_domains, min_size=1, max_size=3, unique_by=str.lower),
    at=st.integers(0, 3),
)
def test_malformed_domain_names_are_refused_naming_the_key(bad, others, at):
    domains = others[: at % (len(others) + 1)] + [bad] + others[at % (len(others) + 1) :]
    message = refusal(config_with(domains))
    assert message.startswith("config key 'domains"), message
    assert repr(bad) in message, message


@settings(max_examples=150, deadline=None, derandomize=True, database=None)
@example(bad="mine\n").via("Python's $ matches before a final newline")
@given(bad=malformed_names)
def test_malformed_named_mixture_names_are_refused_naming_the_key(bad):
    message = refusal(config_with(["alpha", "beta"], {bad: {"alpha": 1.0}}))
    assert message.startswith("config key 'large.named"), message
    assert repr(bad) in message, message


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(data=st.data())
def test_reserved_names_in_any_case_are_refused(data):
    domain = data.draw(st.sampled_from(sorted(RESERVED_DOMAIN_NAMES)).flatmap(_any_case))
    message = refusal(config_with(["alpha", domain]))
    assert message.startswith("config key 'domains'") and repr(domain) in message and "reserved" in message
    builtin = st.sampled_from(sorted(RESERVED_CANDIDATE_NAMES)) | st.from_regex(r"\Arandom_[0-9]{1,3}\Z")
    name = data.draw(builtin.flatmap(_any_case))
    message = refusal(config_with(["alpha", "beta"], {name: {"alpha": 1.0}}))
    assert f"config key 'large.named.{name}'" in message and "reserved" in message, message


@settings(max_examples=80, deadline=None, derandomize=True, database=None)
@given(data=st.data())
def test_names_differing_only_in_case_are_refused(data):
    name = data.draw(valid_domains)
    twin = data.draw(_any_case(name.swapcase()).filter(lambda t: t != name))
    message = refusal(config_with([name, twin]))
    assert message.startswith("config key 'domains'") and repr(name) in message and repr(twin) in message
    assume(name.lower() not in RESERVED_CANDIDATE_NAMES and not name.lower().startswith(RANDOM_CANDIDATE_PREFIX))
    message = refusal(config_with(["alpha", "beta"], {name: {"alpha": 1.0}, twin: {"alpha": 1.0}}))
    assert message.startswith("config key 'large.named'") and "differ only in case" in message, message


@settings(max_examples=80, deadline=None, derandomize=True, database=None)
@given(
    domains=st.lists(valid_domains, min_size=2, max_size=6, unique_by=str.lower),
    named=st.lists(valid_candidates, max_size=3, unique_by=str.lower),
)
def test_valid_names_are_accepted(domains, named):
    config = validate_config(config_with(domains, {n: {domains[0]: 1.0} for n in named}))
    assert config["domains"] == domains
    assert list(config["large"]["named"]) == named


def _numeric_keys() -> list[tuple[str, str, float | None, bool]]:
    """(dotted key, integer or number, lower bound, bound exclusive) of every numeric key in
    the schema, so a key added later is covered without touching this file."""
    schema = load_schema()
    found = []

    def walk(node: dict, path: list[str]) -> None:
        if "$ref" in node:
            node = {**schema["$defs"][node["$ref"].rsplit("/", 1)[-1]], **node}
        types = node.get("type")
        types = types if isinstance(types, list) else [types]
        for kind in ("integer", "number"):
            if kind in types:
                low = node.get("minimum", node.get("exclusiveMinimum"))
                found.append((".".join(path), kind, low, "exclusiveMinimum" in node))
                break
        for key, sub in node.get("properties", {}).items():
            walk(sub, [*path, key])

    walk(schema, [])
    return found


NUMERIC_KEYS = _numeric_keys()


def nested(dotted: str, value) -> dict:
    *parents, last = dotted.split(".")
    config = node = {}
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value
    return config


def _below(low: float, exclusive: bool, kind: str) -> st.SearchStrategy:
    if kind == "integer":
        return st.integers(max_value=int(low) - (0 if exclusive else 1), min_value=-(10**12))
    return st.floats(max_value=low, exclude_max=not exclusive, min_value=-1e12, allow_nan=False)


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(data=st.data())
def test_malformed_numbers_are_refused_naming_the_key(data):
    """Every numeric key refuses NaN, infinities, booleans, numbers in quotes and values below
    its bound; an integer key also refuses a float, even a whole one such as 8.0."""
    key, kind, low, exclusive = data.draw(st.sampled_from(NUMERIC_KEYS), label="key")
    bad = [
        st.sampled_from([float("nan"), float("inf"), float("-inf"), True, False]),
        st.integers(0, 10**6).map(str),
    ]
    if kind == "integer":
        bad.append(st.floats(allow_nan=False, allow_infinity=False))
    if low is not None:
        bad.append(_below(low, exclusive, kind))
    value = data.draw(st.one_of(bad), label="value")
    message = refusal(nested(key, value))
    assert message.startswith(f"config key '{key}'"), message


@pytest.mark.parametrize("key", ["mixtures.count", "proxy.steps", "large.global_batch", "regression.cv_folds"])
def test_whole_floats_in_integer_keys_say_so(key):
    message = refusal(nested(key, 8.0))
    assert message == f"config key '{key}' = 8.0: must be a whole number written without a decimal point"


# --------------------------------------------------------------------------- swarm CSVs

DOMAINS = ["a", "b", "c"]
weights = st.floats(0.01, 1.0).map(lambda w: f"{w:.4f}")


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows([header, *rows])
    path.write_text(buffer.getvalue())
    return path


swarm_rows = st.lists(st.tuples(weights, weights, weights).map(list), min_size=1, max_size=8)


def swarm(folder: Path, rows: list[list[str]]) -> tuple[Path, Path]:
    indexed = [[str(i), *row] for i, row in enumerate(rows)]
    mixtures = write_csv(folder / "mixtures.csv", ["index", *DOMAINS], indexed)
    losses = write_csv(folder / "losses.csv", ["index", *DOMAINS], [[r[0], "3.1", "3.2", "3.3"] for r in indexed])
    return mixtures, losses


def refused_naming(path: Path, call, *args) -> str:
    """`call(*args)` raises a ValueError of our own (not pandas' or numpy's) naming `path`."""
    with pytest.raises(ValueError) as err:
        call(*args)
    assert type(err.value).__module__ in ("builtins", "regmix.files"), repr(err.value)
    assert str(path) in str(err.value), err.value
    return str(err.value)


# read_csv's default na_values: pandas reads these as missing, not as text
NA_MARKERS = {"", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN", "<NA>"}
NA_MARKERS |= {"N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"}


@settings(max_examples=100, deadline=None, derandomize=True, database=None)
@given(rows=swarm_rows, text=st.text(min_size=0, max_size=12), where=st.tuples(st.integers(0, 7), st.integers(1, 3)))
def test_text_in_a_weight_column_is_refused_naming_the_file(rows, text, where):
    """Text without a digit is never a finite weight: refused, whether pandas reads it as text,
    as missing (NA, null, an empty cell) or as a number (inf, nan)."""
    assume(not any(c.isdigit() for c in text))
    with fresh_dir() as folder:
        row, column = where[0] % len(rows), where[1]
        rows[row] = [*rows[row]]
        rows[row][column - 1] = text
        mixtures, losses = swarm(folder, rows)
        refused_naming(mixtures, read_swarm_csvs, mixtures, losses)
        if text not in NA_MARKERS and text.strip().lower() not in ("nan", "inf", "-inf", "+inf", "infinity"):
            # neither missing nor a non-finite number to pandas: the reader names the column
            message = refused_naming(mixtures, files.read_csv, mixtures, True, "index")
            assert f"column {DOMAINS[column - 1]!r}" in message, message


@settings(max_examples=40, deadline=None, derandomize=True, database=None)
@given(text=st.text(" \t\r\n", max_size=6), which=st.sampled_from(["mixtures", "losses"]))
def test_empty_files_are_refused_naming_the_file(text, which):
    with fresh_dir() as folder:
        mixtures, losses = swarm(folder, [["0.5", "0.3", "0.2"]] * 4)
        target = mixtures if which == "mixtures" else losses
        target.write_text(text)
        refused_naming(target, read_swarm_csvs, mixtures, losses)
        with pytest.raises(files.BadFileError):
            files.read_csv(target, numeric=True, index="index")


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(
    header=st.lists(valid_domains, min_size=1, max_size=4, unique=True).filter(lambda h: "index" not in h),
    rows=swarm_rows,
    which=st.sampled_from(["mixtures", "losses"]),
)
def test_a_missing_index_column_is_refused_naming_the_file(header, rows, which):
    with fresh_dir() as folder:
        mixtures, losses = swarm(folder, rows)
        target = mixtures if which == "mixtures" else losses
        write_csv(target, header, [[row[i % 3] for i in range(len(header))] for row in rows])
        message = refused_naming(target, read_swarm_csvs, mixtures, losses)
        assert "'index'" in message


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(
    indices=st.lists(st.integers(0, 5) | st.from_regex(r"\Amix_[0-9]{1,2}\Z"), min_size=2, max_size=8).filter(
        lambda ids: len(set(map(str, ids))) < len(ids)
    ),
    which=st.sampled_from(["mixtures", "losses"]),
)
def test_a_duplicate_index_is_refused_naming_the_file(indices, which):
    with fresh_dir() as folder:
        mixtures, losses = swarm(folder, [["0.5", "0.3", "0.2"]] * len(indices))
        target = mixtures if which == "mixtures" else losses
        write_csv(target, ["index", *DOMAINS], [[str(i), "0.5", "0.3", "0.2"] for i in indices])
        message = refused_naming(target, read_swarm_csvs, mixtures, losses)
        assert "more than once" in message, message


csv_garbage = st.one_of(
    st.text(max_size=80),
    st.lists(st.lists(st.text(',"\n 0123456789.-eE+abinfNA', max_size=5), max_size=5), max_size=6).map(
        lambda rows: "\n".join(",".join(r) for r in rows)
    ),
    st.binary(max_size=60).map(lambda b: b.decode("latin-1")),
)


@settings(max_examples=150, deadline=None, derandomize=True, database=None)
@given(body=csv_garbage | st.binary(max_size=40), header=st.booleans())
def test_any_file_is_read_or_refused_naming_the_file(body, header):
    """Whatever the bytes: read_csv(numeric=True) gives numeric columns, or a BadFileError
    naming the file; read_swarm_csvs gives a swarm, or a ValueError of ours naming the file."""
    with fresh_dir() as folder:
        mixtures, losses = swarm(folder, [["0.5", "0.3", "0.2"]] * 4)
        prefix = "index,a,b,c\n" if header and isinstance(body, str) else ""
        if isinstance(body, bytes):
            mixtures.write_bytes(body)
        else:
            mixtures.write_text(prefix + body, encoding="utf-8", errors="surrogatepass")
        try:
            frame = files.read_csv(mixtures, numeric=True, index="index")
        except files.BadFileError as err:
            assert str(mixtures) in str(err)
        else:
            assert all(frame[c].dtype.kind in "iufb" for c in frame.columns if c != "index"), frame.dtypes
        try:
            weights_, _ = read_swarm_csvs(mixtures, losses)
        except ValueError as err:
            assert type(err).__module__ in ("builtins", "regmix.files"), repr(err)
            assert str(mixtures) in str(err), err
        else:
            assert (weights_.sum(axis=1) - 1).abs().max() < 1e-9


# --------------------------------------------------------------------------- archive verifier

ROOT = "regmix-run"
# letters and digits of any script, and separators that are not path separators: a space,
# U+2028/U+2029 and U+0085, which str.splitlines() (though not a file system) counts as line ends
segment = st.text(
    st.characters(categories=["L", "N", "Zs", "Zl", "Zp"]) | st.sampled_from("_-.+ \x85"), min_size=1, max_size=12
).filter(lambda s: s not in (".", ".."))
safe_names = st.lists(segment, min_size=1, max_size=3).map("/".join).filter(lambda n: n != archive.MANIFEST)


def _no_file_is_a_folder(names: list[str]) -> bool:
    return not any(other.startswith(f"{name}/") for name in names for other in names)


safe_trees = st.lists(safe_names, min_size=1, max_size=8, unique=True).filter(_no_file_is_a_folder)
contents = st.binary(max_size=64)


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(names=safe_trees, payloads=st.lists(contents, min_size=8, max_size=8))
@example(names=["results/a\u2028b.csv", "x\x85y"], payloads=[b"x"] * 8).via("names splitlines() would split")
def test_a_well_formed_archive_of_safe_names_verifies(names, payloads):
    members = [(f"{ROOT}/{name}", data) for name, data in zip(names, payloads, strict=False)]
    with fresh_dir() as folder:
        out = crafted_archive(folder / "run.tar.gz", members)
        assert archive.verify_archive(out) == len(names)


def _unsafe_name() -> st.SearchStrategy[str]:
    def spliced(parts: list[str], bad: str, at: int) -> str:
        at %= len(parts) + 1
        return "/".join([*parts[:at], bad, *parts[at:]])

    parts = st.lists(segment, min_size=1, max_size=3)
    inside = st.tuples(parts, st.sampled_from(["..", ".", ""]), st.integers(0, 3)).map(lambda t: spliced(*t))
    return st.one_of(
        inside.map(lambda n: f"{ROOT}/{n}"),  # a `..`, `.` or empty component
        st.tuples(parts, st.sampled_from(["..", "../.."]), st.integers(0, 3)).map(lambda t: spliced(*t)),
        safe_names.map(lambda n: f"/{n}"),  # absolute
        safe_names.map(lambda n: f"/{ROOT}/{n}"),
        st.tuples(safe_names, st.integers(0, 12)).map(lambda t: f"{ROOT}/{t[0][: t[1]]}\\{t[0][t[1] :]}"),
        st.tuples(safe_names, st.characters(max_codepoint=31)).map(lambda t: f"{ROOT}/{t[0]}{t[1]}x"),
        safe_names.map(lambda n: f"other/{n}"),  # outside the manifest's folder
    )


@settings(max_examples=100, deadline=None, derandomize=True, database=None)
@given(names=safe_trees, bad=_unsafe_name(), data=st.data())
def test_an_unsafe_member_name_is_refused(names, bad, data):
    members = [(f"{ROOT}/{n}", data.draw(contents)) for n in names]
    members.insert(data.draw(st.integers(0, len(members))), (bad, data.draw(contents)))
    with fresh_dir() as folder:
        out = crafted_archive(folder / "run.tar.gz", members)
        with pytest.raises(ValueError, match="refused") as err:
            archive.verify_archive(out)
        # named as the member, or as the manifest line listing it (tarfile reads "a/" as folder "a")
        assert repr(bad) in str(err.value) or repr(bad.removeprefix(f"{ROOT}/")) in str(err.value), err.value
        assert sorted(p.name for p in folder.iterdir()) == ["run.tar.gz"]  # nothing extracted


@settings(max_examples=50, deadline=None, derandomize=True, database=None)
@given(names=safe_trees, data=st.data())
def test_duplicate_members_and_links_are_refused(names, data):
    members = [(f"{ROOT}/{n}", data.draw(contents)) for n in names]
    twice = data.draw(st.sampled_from(names))
    kind = data.draw(st.sampled_from(["duplicate", "symlink", "hardlink"]))
    if kind == "duplicate":
        extra, reason = (f"{ROOT}/{twice}", data.draw(contents)), "appears twice"
    else:
        link_type = tarfile.SYMTYPE if kind == "symlink" else tarfile.LNKTYPE
        extra, reason = (f"{ROOT}/{twice}.link", ("type", link_type)), "a link"
    members.insert(data.draw(st.integers(0, len(members))), extra)
    with fresh_dir() as folder:
        out = crafted_archive(folder / "run.tar.gz", members, [n.removeprefix(f"{ROOT}/") for n, c in members])
        with pytest.raises(ValueError, match="refused") as err:
            archive.verify_archive(out)
        assert reason in str(err.value) and repr(extra[0]) in str(err.value), err.value
