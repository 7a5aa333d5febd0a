"""The run archive: contents, manifest, and verification against tampering."""

import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest

from regmix import archive
from regmix.cli import main as cli_main
from regmix.config import REPO_DIR
from regmix.settings.outputs import ArchiveSettings
from tests.helpers import synthetic_run as run
from tests.helpers.archives import crafted_archive

CONTAINER = "docker://ghcr.io/regmix-pipeline/regmix:0.1.0"


def settings(include_checkpoints=False) -> dict:
    return {
        "seed": 0,
        "domains": run.DOMAINS,
        "archive": {"include_checkpoints": include_checkpoints},
        "container": CONTAINER,
    }


@pytest.fixture
def results(tmp_path):
    root = run.write_run(tmp_path / "results")
    (root / "summary.md").write_text("# summary\n")
    (root / "summary.csv").write_text("candidate,target_rank\nregmix,1\n")
    (root / "figures").mkdir()
    (root / "figures/downstream_scores.png").write_bytes(b"\x89PNG fake")
    (root / "large/regmix/model").mkdir()
    (root / "large/regmix/model/model.safetensors").write_bytes(b"\0" * 1000)
    (root / "proxies/mix_0000/.state").mkdir()
    (root / "proxies/mix_0000/.state/optimizer.pt").write_bytes(b"state")
    (root / "data/a").mkdir()
    (root / "data/a/train.bin").write_bytes(b"\1\2" * 100)
    (root / "data/a/train.json").write_text("{}")
    (root / "report.html").write_text("<html>report</html>")
    return root


def _archive(tmp_path, results, *extra) -> Path:
    out = results / "archive/regmix-run.tar.gz"
    code = cli_main(
        [
            "archive",
            "--settings",
            json.dumps(settings()),
            "--results",
            str(results),
            "--config",
            str(REPO_DIR / "config/config.yaml"),
            str(REPO_DIR / "config/schema.yaml"),
            "--out",
            str(out),
            "--report",
            str(results / "report.html"),
            *extra,
        ]
    )
    assert code == 0
    return out


def _names(path: Path) -> list[str]:
    with tarfile.open(path) as tar:
        return [m.name for m in tar.getmembers()]


def test_archive_holds_the_run_and_a_manifest_of_every_file(tmp_path, results):
    lock = tmp_path / "requirements.lock"
    lock.write_text("torch==2.13.0\n")
    out = _archive(tmp_path, results, "--lock", str(lock))
    names = set(_names(out))
    for expected in (
        "results/summary.md",
        "results/summary.csv",
        "results/figures/downstream_scores.png",
        "results/chosen/regmix.yaml",
        "results/eval/regmix.json",
        "results/regression/cv.json",
        "results/large/prior/train_log.jsonl",
        "results/data/a/train.json",
        "config/config.yaml",
        "config/schema.yaml",
        "report.html",
        "requirements.lock",
        "PROVENANCE.json",
        "MANIFEST.sha256",
    ):
        assert f"regmix-run/{expected}" in names, expected
    # token files, training state and checkpoints (by default) stay out
    assert not [n for n in names if n.endswith(".bin") or ".state" in n or "/model/" in n]
    with tarfile.open(out) as tar:
        manifest = tar.extractfile("regmix-run/MANIFEST.sha256").read().decode().splitlines()
        listed = {line.split("  ", 1)[1]: line.split("  ", 1)[0] for line in manifest}
        assert set(listed) == {n.removeprefix("regmix-run/") for n in names} - {"MANIFEST.sha256"}
        data = tar.extractfile("regmix-run/results/eval/regmix.json").read()
        assert listed["results/eval/regmix.json"] == hashlib.sha256(data).hexdigest()
        record = json.loads(tar.extractfile("regmix-run/PROVENANCE.json").read())
    assert record["container"] == CONTAINER and record["settings"] == settings()
    assert record["absent_optional_files"] == []
    if (REPO_DIR / ".git").exists():  # the checkout's commit, whatever the working directory
        assert len(record["git_commit"]) == 40
    assert cli_main(["verify-archive", str(out)]) == 0


def test_archive_is_reproducible_and_checkpoints_are_switchable(tmp_path, results):
    first = _archive(tmp_path, results).read_bytes()
    assert _archive(tmp_path, results).read_bytes() == first
    out = tmp_path / "with-checkpoints.tar.gz"
    archive.build_archive(ArchiveSettings.from_json(settings(include_checkpoints=True)), results, [], out)
    assert "with-checkpoints/results/large/regmix/model/model.safetensors" in _names(out)
    assert archive.verify_archive(out) > 0


def _rewrite(src: Path, dest: Path, change) -> Path:
    """Copy an archive member by member, letting `change(name, data)` edit, drop (None) or add."""
    with tarfile.open(src) as tar_in, tarfile.open(dest, "w:gz") as tar_out:
        members = [(m.name, tar_in.extractfile(m).read()) for m in tar_in.getmembers() if m.isfile()]
        for name, data in change(members):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar_out.addfile(info, io.BytesIO(data))
    return dest


def _flip_byte(members):
    for name, data in members:
        if name.endswith("results/chosen/regmix.yaml"):
            data = bytes([data[0] ^ 1]) + data[1:]
        yield name, data


def _drop(members):
    return [(n, d) for n, d in members if not n.endswith("results/eval/prior.json")]


def _add_file(members):
    return [*members, ("regmix-run/results/eval/smuggled.json", b"{}")]


@pytest.mark.parametrize(
    "change, kind, name",
    [
        (_flip_byte, "changed", "results/chosen/regmix.yaml"),
        (_drop, "missing", "results/eval/prior.json"),
        (_add_file, "extra", "results/eval/smuggled.json"),
    ],
)
def test_verify_names_the_tampered_file(tmp_path, results, capsys, change, kind, name):
    out = _archive(tmp_path, results)
    tampered = _rewrite(out, tmp_path / "tampered.tar.gz", change)
    capsys.readouterr()
    assert cli_main(["verify-archive", str(tampered)]) == 1
    err = capsys.readouterr().err
    assert f"{kind}: {name}" in err
    assert err.count("\n  ") == 1, err  # only the tampered file is reported


def test_verify_rejects_a_corrupted_compressed_stream(tmp_path, results, capsys):
    out = _archive(tmp_path, results)
    raw = bytearray(out.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    out.write_bytes(bytes(raw))
    assert cli_main(["verify-archive", str(out)]) == 1
    assert str(out) in capsys.readouterr().err


def test_missing_report_is_recorded_not_faked(tmp_path, results):
    out = tmp_path / "run.tar.gz"
    archive.build_archive(ArchiveSettings.from_json(settings()), results, [], out, report=tmp_path / "no-report.html")
    assert not [n for n in _names(out) if n.endswith("report.html")]
    with tarfile.open(out) as tar:
        record = json.loads(tar.extractfile("run/PROVENANCE.json").read())
    assert record["absent_optional_files"] == [str(tmp_path / "no-report.html")]


UNSAFE = {
    "dotdot": ([("regmix-run/../evil.txt", b"x")], None, "not a plain relative path"),
    "absolute": ([("/tmp/evil.txt", b"x")], ["/tmp/evil.txt"], "not a plain relative path"),
    "outside": ([("other/evil.txt", b"x")], ["../other/evil.txt"], "outside the archive's folder"),
    "symlink": ([("regmix-run/link", ("type", tarfile.SYMTYPE))], [], "a link"),
    "hardlink": ([("regmix-run/link", ("type", tarfile.LNKTYPE))], [], "a link"),
    "device": ([("regmix-run/dev", ("type", tarfile.CHRTYPE))], [], "device or special file"),
    "fifo": ([("regmix-run/pipe", ("type", tarfile.FIFOTYPE))], [], "device or special file"),
    "duplicate": ([("regmix-run/a.txt", b"x"), ("regmix-run/a.txt", b"y")], ["a.txt"], "appears twice"),
    "manifest_dotdot": ([("regmix-run/a.txt", b"x")], ["a.txt", "../a.txt"], "not a plain relative path"),
    "manifest_absolute": ([("regmix-run/a.txt", b"x")], ["a.txt", "/etc/passwd"], "not a plain relative path"),
    "manifest_twice": ([("regmix-run/a.txt", b"x")], ["a.txt", "a.txt"], "a second time"),
}


@pytest.mark.parametrize("case", sorted(UNSAFE))
def test_verify_refuses_unsafe_archives_and_extracts_nothing(tmp_path, monkeypatch, capsys, case):
    members, manifest_names, reason = UNSAFE[case]
    out = crafted_archive(tmp_path / "crafted.tar.gz", members, manifest_names)
    work = tmp_path / "work" / "deeper"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    before = sorted(p for p in tmp_path.rglob("*"))
    assert cli_main(["verify-archive", str(out)]) == 1
    captured = capsys.readouterr()
    assert "match the manifest" not in captured.out
    assert "refused" in captured.err and reason in captured.err, captured.err
    assert sorted(p for p in tmp_path.rglob("*")) == before  # nothing extracted anywhere


def test_verify_accepts_a_crafted_safe_archive(tmp_path):
    out = crafted_archive(tmp_path / "safe.tar.gz", [("regmix-run/a.txt", b"x"), ("regmix-run/sub/b.txt", b"y")])
    assert archive.verify_archive(out) == 2


@pytest.mark.parametrize(
    "name, plain",
    [
        ("a/b.txt", True),
        ("a", True),
        ("../a", False),
        ("a/../b", False),
        ("/a", False),
        ("a//b", False),
        ("./a", False),
        ("a\\b", False),
        ("a\nb", False),
        ("", False),
        ("a/", False),
    ],
)
def test_plain_relative_path(name, plain):
    assert archive.plain_relative_path(name) is plain
