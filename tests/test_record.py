"""The run record: one typed, versioned layout of metrics.json, written and read only through it."""

from __future__ import annotations

import json

import pytest

from tlexp.files import write_yaml
from tlexp.results import VERSION, RecordError, RunRecord, load_record

from records import first_layout, make_record, scores

SPLITS = ("train", "val", "test")


def _record(tmp_path, **kw):
    clfs = {
        "head": {s: scores(0.9) for s in SPLITS},
        "forest": {s: scores(0.8) for s in SPLITS},
        "svc": {s: scores(0.7) for s in SPLITS},
    }
    config = {"name": "r", "classifiers": {"svc": {"estimator": "sklearn.svm.SVC"}}}
    return make_record("r", str(tmp_path), config, clfs, **kw)


def test_save_and_load_round_trip(tmp_path):
    record = _record(tmp_path)
    record.save(tmp_path)
    data = json.loads((tmp_path / "metrics.json").read_text())
    assert data["version"] == VERSION == 2
    assert list(data["classifiers"]) == ["head", "forest", "svc"]  # report order kept
    again = load_record(tmp_path)
    assert again == record
    assert again.head.test.accuracy == 0.9
    assert again.classifiers["forest"].split("val").accuracy == 0.8
    assert again.history.epochs == 2


def test_first_layout_is_migrated(tmp_path):
    """What tlexp wrote before the record type: forest at the top, no version, no config."""
    new = _record(tmp_path).to_dict()
    (tmp_path / "metrics.json").write_text(json.dumps(first_layout(new)))
    write_yaml(tmp_path / "config.yaml", new["config"])
    record = load_record(tmp_path)
    assert record.version == VERSION
    assert list(record.classifiers) == ["head", "forest", "svc"]
    assert record.classifiers["forest"].kind == "forest" and record.classifiers["forest"].n_features == 64
    assert record.classifiers["svc"].kind == "sklearn" and record.classifiers["svc"].estimator == "SVC"
    assert record.classifiers["svc"].test.accuracy == 0.7
    assert record.config == new["config"]


def test_newer_version_is_refused_with_a_fix(tmp_path):
    data = _record(tmp_path).to_dict()
    data["version"] = 99
    (tmp_path / "metrics.json").write_text(json.dumps(data))
    with pytest.raises(RecordError, match=r"version 99; this tlexp reads versions 1 to 2\. Upgrade tlexp"):
        load_record(tmp_path)


@pytest.mark.parametrize(
    "edit, where",
    [
        (lambda d: d["classifiers"]["head"]["test"].pop("accuracy"), "classifiers.head.test.accuracy"),
        (lambda d: d.update(surprise=1), "surprise"),
        (lambda d: d["freeze"].update(frozen_share="most"), "freeze.frozen_share"),
    ],
)
def test_a_record_that_does_not_fit_is_refused_not_misread(tmp_path, edit, where):
    data = _record(tmp_path).to_dict()
    edit(data)
    (tmp_path / "metrics.json").write_text(json.dumps(data))
    with pytest.raises(RecordError, match=rf"not a valid tlexp version-2 record: {where}:"):
        load_record(tmp_path)


def test_unfinished_run_has_no_record(tmp_path):
    with pytest.raises(RecordError, match="has no metrics.json: the run did not finish"):
        load_record(tmp_path)
    (tmp_path / "metrics.json").write_text("{half")
    with pytest.raises(RecordError, match="Cannot read .* as JSON"):
        load_record(tmp_path)


def test_record_rejects_bad_values_when_written():
    """A run cannot write a record that readers would refuse."""
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=r"classifiers\.head\.kind\s+Input should be 'head', 'forest' or"):
        RunRecord.model_validate({**_record_dict(), "classifiers": {"head": {"kind": "dense"}}})


def _record_dict():
    from pathlib import Path

    return _record(Path("/tmp")).to_dict()
