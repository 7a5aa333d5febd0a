"""The shared readers: a user's bad file is one BadFileError naming the file."""

import json
import pickle

import pytest

from regmix import files
from regmix.files import BadFileError


def test_bad_file_error_is_a_value_error_naming_file_line_and_column(tmp_path):
    err = BadFileError(tmp_path / "x.yaml", "YAML syntax error", 3, 7)
    assert isinstance(err, ValueError)
    assert str(err) == f"{tmp_path / 'x.yaml'}, line 3, column 7: YAML syntax error"
    assert str(BadFileError("f.csv", "empty")) == "f.csv: empty"


def test_read_text_refuses_non_utf8(tmp_path):
    path = tmp_path / "latin.txt"
    path.write_bytes(b"caf\xe9\n")
    with pytest.raises(BadFileError, match="latin.txt: not UTF-8"):
        files.read_text(path)


def test_missing_file_stays_file_not_found(tmp_path):
    for read in (files.read_text, files.read_json, files.read_yaml, files.read_csv):
        with pytest.raises(FileNotFoundError):
            read(tmp_path / "absent")


def test_read_json_round_trip_and_truncation(tmp_path):
    path = tmp_path / "losses.json"
    files.write_json(path, {"a": [1, 2], "b": "text"})
    assert files.read_json(path) == {"a": [1, 2], "b": "text"}
    path.write_text(path.read_text()[:15])
    with pytest.raises(BadFileError, match=r"losses.json, line \d+, column \d+: not valid JSON") as info:
        files.read_json(path)
    assert info.value.line is not None
    path.write_text("")
    with pytest.raises(BadFileError, match="losses.json: empty file"):
        files.read_json(path)


def test_read_yaml_syntax_error_names_line_and_column(tmp_path):
    path = tmp_path / "prior.yaml"
    path.write_text("web: 0.5\ncode: [0.5\nmath: 0\n")
    with pytest.raises(BadFileError, match=r"prior.yaml, line \d+, column \d+: YAML syntax error") as info:
        files.read_yaml(path)
    assert info.value.line >= 2
    path.write_text("a: 1\n")
    assert files.read_yaml(path) == {"a": 1}


def test_read_csv_numeric_columns(tmp_path):
    path = tmp_path / "mixtures.csv"
    path.write_text("index,web,code\n0,0.5,0.5\n1,0.2,0.8\n")
    frame = files.read_csv(path, numeric=True, index="index")
    assert frame["web"].tolist() == [0.5, 0.2]
    path.write_text("index,web,code\n0,0.5,0.5\n1,lots,0.8\n")
    assert files.read_csv(path)["web"].tolist() == ["0.5", "lots"]  # numeric=False: as pandas reads it
    with pytest.raises(BadFileError, match=r"mixtures.csv: column 'web': 'lots' in data row 2 is not a number"):
        files.read_csv(path, numeric=True, index="index")
    with pytest.raises(BadFileError, match="column 'web'"):
        files.read_csv(path, numeric=["web"])
    files.read_csv(path, numeric=["code"])  # only the named columns must be numbers


def test_read_csv_empty_missing_column_and_unparsable(tmp_path):
    path = tmp_path / "losses.csv"
    path.write_text("")
    with pytest.raises(BadFileError, match="losses.csv: empty file"):
        files.read_csv(path)
    path.write_text("web,code\n1,2\n")
    with pytest.raises(BadFileError, match="losses.csv: no 'index' column"):
        files.read_csv(path, index="index")
    with pytest.raises(BadFileError, match="no 'math' column"):
        files.read_csv(path, numeric=["math"])
    path.write_text('a,b\n1,"2\n')
    with pytest.raises(BadFileError, match="losses.csv.*not a valid CSV"):
        files.read_csv(path)


class Model:
    pass


@pytest.mark.parametrize(
    "content, problem",
    [
        (b"", "empty file"),
        (pickle.dumps(Model())[:-5], "truncated or corrupt"),
        (b"garbage\nnot a pickle", "truncated or corrupt"),
        (pickle.dumps({"a": 1}), "holds a dict, not a Model"),
    ],
)
def test_load_pickle_refuses_bad_files_with_hint(tmp_path, content, problem):
    path = tmp_path / "model.pkl"
    path.write_bytes(content)
    with pytest.raises(BadFileError, match=rf"model.pkl: {problem}.*rerun `regmix fit`"):
        files.load_pickle(path, Model, "rerun `regmix fit`")


def test_load_pickle_returns_the_object(tmp_path):
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps(Model()))
    assert isinstance(files.load_pickle(path, Model, "hint"), Model)


def _safetensors(path, tensors):
    header, blob = {}, b""
    for name, data in tensors.items():
        header[name] = {"dtype": "U8", "shape": [len(data)], "data_offsets": [len(blob), len(blob) + len(data)]}
        blob += data
    raw = json.dumps(header).encode()
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + blob)


def test_check_safetensors(tmp_path):
    path = tmp_path / "model.safetensors"
    _safetensors(path, {"w": b"\x01" * 64, "b": b"\x02" * 8})
    assert files.check_safetensors(path) == ["w", "b"]
    whole = path.read_bytes()
    path.write_bytes(whole[:-4])
    with pytest.raises(BadFileError, match=r"model.safetensors: truncated: tensor 'b'.*retrain"):
        files.check_safetensors(path, "retrain")
    path.write_bytes(whole[:30])
    with pytest.raises(BadFileError, match="model.safetensors: truncated or not safetensors"):
        files.check_safetensors(path)
    path.write_bytes(b"\x01\x02")
    with pytest.raises(BadFileError, match="shorter than a safetensors header"):
        files.check_safetensors(path)
    path.write_bytes((5).to_bytes(8, "little") + b"{nope")
    with pytest.raises(BadFileError, match="not JSON"):
        files.check_safetensors(path)


def test_check_safetensors_agrees_with_the_library(tmp_path):
    safetensors_torch = pytest.importorskip("safetensors.torch")
    torch = pytest.importorskip("torch")
    path = tmp_path / "model.safetensors"
    safetensors_torch.save_file({"w": torch.ones(4, 4), "b": torch.zeros(3)}, str(path))
    assert sorted(files.check_safetensors(path)) == ["b", "w"]
