"""Token streams over several files, mixture batches, fixed validation windows."""

from __future__ import annotations

import json

import numpy as np
import pytest

from regmix.data import MixtureBatches, TokenStream, domain_assignment, load_mixture, validation_windows
from tests.helpers.training import write_tokens


def test_token_stream_spans_files(tmp_path):
    tokens = np.arange(1000) % 60000
    write_tokens(tmp_path, "d", "train", tokens, n_files=3)
    stream = TokenStream(tmp_path / "d" / "train.json")
    assert len(stream) == 1000 and len(stream.files) == 3
    starts = np.array([0, 330, 332, 990, 500])  # some windows straddle file boundaries
    np.testing.assert_array_equal(stream.windows(starts, 10), tokens[starts[:, None] + np.arange(10)])
    with pytest.raises(IndexError):
        stream.windows(np.array([995]), 10)


def test_token_stream_checks_the_sidecar(tmp_path):
    write_tokens(tmp_path, "d", "train", np.arange(100))
    meta = json.loads((tmp_path / "d" / "train.json").read_text())
    (tmp_path / "d" / "train.json").write_text(json.dumps({**meta, "tokens": 99}))
    with pytest.raises(ValueError, match="99"):
        TokenStream(tmp_path / "d" / "train.json")
    (tmp_path / "d" / "train.json").write_text(json.dumps({**meta, "files": ["missing.bin"]}))
    with pytest.raises(FileNotFoundError, match="missing.bin"):
        TokenStream(tmp_path / "d" / "train.json")


def test_domain_counts_follow_weights():
    weights = np.array([0.5, 0.3, 0.0, 0.2])
    counts = np.stack([np.bincount(domain_assignment(weights, 16, 0, s), minlength=4) for s in range(2000)])
    assert counts.sum(1).tolist() == [16] * 2000
    assert counts[:, 2].max() == 0  # a weight-0 domain is never drawn
    # every step takes floor or ceil of weight x batch, and the right share on average
    assert set(np.unique(counts[:, 1])) <= {4, 5}
    np.testing.assert_allclose(counts.mean(0) / 16, weights, atol=0.01)


@pytest.fixture
def three_domains(tmp_path):
    for i, domain in enumerate(["a", "b", "c"]):
        # each domain's tokens live in their own id range, so a window reveals its domain
        write_tokens(tmp_path, domain, "train", 1000 * (i + 1) + np.arange(5000) % 997)
        write_tokens(tmp_path, domain, "valid", 1000 * (i + 1) + np.arange(700) % 997)
    return tmp_path


def test_batches_are_a_function_of_seed_step_and_weights(three_domains):
    weights = [{"a": 0.5, "b": 0.5, "c": 0.0}, {"a": 0.1, "b": 0.2, "c": 0.7}]
    batches = MixtureBatches(three_domains, ["a", "b", "c"], weights, seq_len=15, global_batch=10, seed=1)
    first = batches.batch(3)
    assert first.shape == (2, 10, 16) and first.dtype == np.int64
    np.testing.assert_array_equal(first, batches.batch(3))
    assert not np.array_equal(first, batches.batch(4))
    # model 1 alone reads exactly what it reads in the pack
    alone = MixtureBatches(three_domains, ["a", "b", "c"], weights[1:], seq_len=15, global_batch=10, seed=1)
    np.testing.assert_array_equal(alone.batch(3)[0], first[1])
    # windows are contiguous runs of one domain, in proportion to the weights
    domain_of = first[..., 0] // 1000 - 1
    assert (first[..., -1] // 1000 - 1 == domain_of).all()
    assert sorted(np.bincount(domain_of[0], minlength=3).tolist()) == [0, 5, 5]
    assert np.bincount(domain_of[1], minlength=3).tolist() == [1, 2, 7]


def test_short_train_split_names_the_domain(three_domains):
    write_tokens(three_domains, "b", "train", np.arange(10))
    with pytest.raises(ValueError, match="domain 'b'"):
        MixtureBatches(three_domains, ["a", "b", "c"], [{"a": 0.5, "b": 0.5}], seq_len=15, global_batch=4, seed=0)
    # weight 0 everywhere: the short domain is never sampled, so it is fine
    MixtureBatches(three_domains, ["a", "b", "c"], [{"a": 1.0}], seq_len=15, global_batch=4, seed=0)


def test_validation_windows_fixed_and_disjoint(three_domains):
    windows = validation_windows(three_domains, ["a", "b", "c"], 8, 15)
    again = validation_windows(three_domains, ["a", "b", "c"], 8, 15)
    assert set(windows) == {"a", "b", "c"}
    for domain in windows:
        np.testing.assert_array_equal(windows[domain], again[domain])
        assert windows[domain].shape == (8, 16)
    starts = windows["a"][:, 0] - 1000
    assert (np.diff(starts) >= 16).all()  # non-overlapping
    write_tokens(three_domains, "c", "valid", 3000 + np.arange(100))
    with pytest.raises(ValueError, match="domain 'c'.*valid.*fewer than the 128 needed"):
        validation_windows(three_domains, ["a", "b", "c"], 8, 15)


def test_load_mixture(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text("name: prior\nweights: {a: 0.25, b: 0.75}\n")
    assert load_mixture(path, ["a", "b", "c"]) == ("prior", {"a": 0.25, "b": 0.75, "c": 0.0})
    path.write_text("mix_id: x\nweights: {a: 0.5, b: 0.6}\n")
    with pytest.raises(ValueError, match="sum"):
        load_mixture(path, ["a", "b"])
