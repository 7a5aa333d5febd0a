"""The text kind: per-domain globs of plain text files, a document per file or per line
(`text_unit`); a validation-only set is one glob."""

from __future__ import annotations

from collections.abc import Iterator

from regmix.sources.base import UNREADABLE, GlobbedKind, Record, Spec, read_binary


def text_records(files: list[str], unit: str) -> Iterator[Record]:
    for path in files:
        with read_binary(path) as handle:
            if unit == "file":
                try:
                    yield handle.read().decode("utf-8"), path
                except UnicodeDecodeError as err:
                    yield UNREADABLE, f"{path}: {err}"
                continue
            lineno = 0  # not enumerate(): its cached result tuple would keep each raw line alive
            for line in handle:
                lineno += 1
                where = f"{path}:{lineno}"
                try:
                    end = len(line)
                    while end and line[end - 1] in b"\r\n":
                        end -= 1
                    decoded = str(memoryview(line)[:end], "utf-8")  # decodes without a stripped copy of the line
                except UnicodeDecodeError as err:
                    del line  # the raw line is not kept alive next to its text while consumers run
                    yield UNREADABLE, f"{where}: {err}"
                    continue
                del line
                yield decoded, where


class Text(GlobbedKind):
    name = "text"
    keys = frozenset({"files", "text_unit"})
    validation_keys = frozenset({"files", "text_unit"})

    def read(self, files: list[str], spec: Spec) -> Iterator[Record]:
        return text_records(files, spec["text_unit"])


KIND = Text()
