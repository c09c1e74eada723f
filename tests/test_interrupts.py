"""A SIGTERM whose KeyboardInterrupt something swallowed (a library's import that catches
everything) still stops the run and the sweep as an interrupt: the flag the handler sets
is read where an error would otherwise mark the cell failed. No training here."""

from __future__ import annotations

import json
import signal

import pytest

from conftest import sweep_config, tiny_config_file

LOST = "module 'matplotlib' has no attribute 'artist'"  # what a half-imported matplotlib raised


def swallowed_sigterm(*args, **kwargs):
    """What a cell saw: the handler ran (the flag is set), its interrupt was lost, and the
    half-imported module failed the next call."""
    from tlexp.interrupts import TERMINATED

    TERMINATED.set()
    raise AttributeError(LOST)


def test_a_sweep_records_the_cell_interrupted_and_claims_no_more(tmp_path, flat_dataset, monkeypatch, capsys):
    import tlexp.experiment
    from tlexp.cli import main

    monkeypatch.setattr(tlexp.experiment, "run_experiment", swallowed_sigterm)
    cfg = sweep_config(tmp_path, flat_dataset, {"model.freeze": [0.3, 0.5]}, name="term")
    assert main(["sweep", str(cfg)]) == 128 + signal.SIGTERM
    assert "tlexp: terminated (SIGTERM)" in capsys.readouterr().err
    cells = {c["name"]: c for c in json.loads((tmp_path / "results" / "term" / "status.json").read_text())["cells"]}
    assert cells["vgg16_f30_s0"]["status"] == "interrupted" and cells["vgg16_f50_s0"]["status"] == "pending"
    # The next command in this process starts afresh (the flag is cleared): an error is a failure again.
    monkeypatch.setattr(tlexp.experiment, "run_experiment", boom)
    assert main(["sweep", str(cfg)]) == 1
    cells = {c["name"]: c for c in json.loads((tmp_path / "results" / "term" / "status.json").read_text())["cells"]}
    assert {c["status"] for c in cells.values()} == {"failed"}


def boom(*args, **kwargs):
    raise ValueError("boom")


def test_a_run_says_interrupted_not_failed(tmp_path, flat_dataset, monkeypatch, capsys):
    from tlexp.cli import main
    from tlexp.experiment import _run

    monkeypatch.setattr(_run.phases, "plot", swallowed_sigterm)  # where matplotlib is imported
    assert main(["run", str(tiny_config_file(tmp_path, flat_dataset, "cut"))]) == 128 + signal.SIGTERM
    log = (tmp_path / "results" / "cut" / "run.log").read_text()
    assert "run: interrupted" in log and "run: failed" not in log
    assert "Traceback" not in capsys.readouterr().err
    # Before the run folder exists, the command line says it was terminated, not a traceback.
    monkeypatch.setattr(_run, "build", swallowed_sigterm)
    assert main(["run", str(tiny_config_file(tmp_path, flat_dataset, "early"))]) == 128 + signal.SIGTERM
    err = capsys.readouterr().err
    assert "tlexp: terminated (SIGTERM)" in err and "Traceback" not in err


def test_the_flag_alone_raises_nothing_until_looked_at():
    from tlexp.interrupts import TERMINATED, stop_if_terminated

    TERMINATED.clear()
    stop_if_terminated()  # not set: nothing
    TERMINATED.set()
    with pytest.raises(KeyboardInterrupt):
        stop_if_terminated()
    TERMINATED.clear()
