"""The depth probe: how good are a frozen backbone's features at each of its stages.

One pass of the images through the frozen backbone gives the global-average-pooled
activations at every stage boundary (:func:`tlexp.model.backbone_stages`); the config's
forest and classifiers are fitted on each depth's training split and scored on val and
test (Yosinski et al. 2014; Kornblith et al. 2019 for logistic regression on fixed
features). :func:`run_probe` writes ``probe.json``, ``probe.csv``, ``probe.png`` and
``probe.log`` into a new folder. The modules are private; this package's names are the API.
"""

from __future__ import annotations

from tlexp.probes._run import default_probe_dir, run_probe
from tlexp.runfolder import PROBE_CSV, PROBE_FILE, PROBE_LOG, PROBE_PLOT

__all__ = ["PROBE_CSV", "PROBE_FILE", "PROBE_LOG", "PROBE_PLOT", "default_probe_dir", "run_probe"]
