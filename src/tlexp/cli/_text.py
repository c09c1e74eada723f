"""What ``tlexp plan`` prints: the plan of a run or of a sweep's cells, as text."""

from __future__ import annotations


def format_plan(plan: dict, config_yaml: str) -> str:
    """Human-readable text of :func:`tlexp.experiment.plan_experiment`'s result."""
    d, f, m = plan["data"], plan["freeze"], plan["model"]
    lines = [
        "# resolved config",
        config_yaml.rstrip(),
        "",
        "# data",
        f"root: {d['root']}",
        f"layout: {d['layout']}",
        f"classes: {', '.join(d['class_names'])}",
    ]
    width = max(len(c) for c in d["class_names"])
    lines.append(f"{'split':<6} " + " ".join(f"{c:>{max(width, 6)}}" for c in d["class_names"]) + f" {'total':>7}")
    for split, per_class in d["counts"].items():
        lines.append(
            f"{split:<6} "
            + " ".join(f"{n:>{max(width, 6)}}" for n in per_class.values())
            + f" {sum(per_class.values()):>7}"
        )
    lines += [
        "",
        "# freeze plan",
        f"backbone: {plan['config']['model']['backbone']} ({f['layers_total']} layers, "
        f"{f['total_params']:,} parameters)",
        f"requested: {f['requested']}",
        f"frozen: {f['layers_frozen']} layers, through {f['last_frozen_layer']}",
        f"frozen share of backbone parameters: {100 * f['frozen_share']:.2f} % ({f['frozen_params']:,})",
        f"trains: {f.get('trains') or 'all layers above the frozen part'} (model.train: {f.get('train', 'all')})",
        f"batchnorm in the trainable part: {f['batchnorm']}",
        f"backbone trainable: {f['backbone_trainable']:,}   non-trainable: {f['backbone_non_trainable']:,}",
        f"whole model trainable: {m['trainable']:,}   non-trainable: {m['non_trainable']:,}   total: {m['total']:,}",
    ]
    lines += _stage_lines(plan.get("stages", []), f) + _schedule_lines(plan.get("schedule", []))
    return "\n".join(lines)


def _stage_lines(stages: list[dict], f: dict) -> list[str]:
    """The backbone's stages (``model.train: block:<k>`` names one), marking those that train."""
    if not stages:
        return []
    lines = [
        "",
        "# backbone stages (model.train: block:<number or name>; gradual unfreezing and layer_decay count these)",
    ]
    lo, hi = f.get("scope_start", 0), f.get("scope_stop", f["layers_total"])
    for s in stages:
        mark = "trains" if s["stop"] > lo and s["start"] < hi else "frozen"
        lines.append(
            f"{s['index']:>2}  {s['label']:<10} layers {s['start']:>4}-{s['stop'] - 1:<4} "
            f"{s['first_layer']} .. {s['last_layer']}  {s['params']:,} parameters  ({mark})"
        )
    return lines


def _schedule_lines(schedule: list[dict]) -> list[str]:
    if not schedule:
        return []
    lines = ["", "# schedule (train.schedule)"]
    for i, s in enumerate(schedule, start=1):
        lines.append(f"{i}. {s['name']}: {s['epochs']} epoch(s) at lr {s['learning_rate']:g}, training {s['trains']}")
    return lines


def format_sweep_plan(plan: dict) -> str:
    """One line per cell of :func:`tlexp.sweeps.plan_sweep`'s result: its freeze plan and counts."""
    d = plan["data"]
    counts = {s: sum(c.values()) for s, c in d["counts"].items()}
    lines = [
        f"# data: {d['root']} ({d['layout']} layout; classes {', '.join(d['class_names'])}; "
        f"train {counts['train']} / val {counts['val']} / test {counts['test']}, same split in every cell)",
        f"# {len(plan['cells'])} cells",
    ]
    header = ("cell", "frozen prefix through", "frozen", "backbone trainable", "non-trainable", "model total", "stages")
    rows = []
    for c in plan["cells"]:
        f, m = c["plan"]["freeze"], c["plan"]["model"]
        rows.append(
            (
                c["name"],
                str(f["last_frozen_layer"]),
                f"{100 * f['frozen_share']:.1f} %",
                f"{f['backbone_trainable']:,}",
                f"{f['backbone_non_trainable']:,}",
                f"{m['total']:,}",
                " > ".join(f"{s['name']}" for s in c["plan"].get("schedule", [])),
            )
        )
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        cells = enumerate(zip(r, widths, strict=True))
        lines.append("  ".join(v.ljust(w) if i < 2 or i == 6 else v.rjust(w) for i, (v, w) in cells))
    return "\n".join(lines)
