"""Config loading, merging and validation: one test per class of mistake."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

from tlexp.config import Config, describe, load_config
from tlexp.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


@pytest.fixture
def data_root(tmp_path: Path) -> Path:
    root = tmp_path / "imgs"
    root.mkdir()
    return root


def test_merge_order_defaults_file_overrides(tmp_path, data_root):
    p = write(tmp_path, f"data: {{root: {data_root}}}\nmodel: {{freeze: 0.5, backbone: resnet50}}\n")
    cfg = load_config(p, ["model.freeze=0.7", "train.epochs=3"])
    assert cfg.model.freeze == 0.7  # override beats file
    assert cfg.model.backbone == "resnet50"  # file beats default
    assert cfg.train.epochs == 3
    assert cfg.train.batch_size == 32  # default
    assert cfg.data.root == str(data_root.resolve())


def test_override_values_are_yaml(data_root):
    cfg = load_config(
        None,
        [
            f"data.root={data_root}",
            "model.head.dense=[128]",
            "forest.max_depth=null",
            "model.freeze=block4_pool",
            "model.weights=none",
        ],
    )
    assert cfg.model.head.dense == [128]
    assert cfg.forest.max_depth is None
    assert cfg.model.freeze == "block4_pool"
    assert cfg.model.weights == "none"


def test_exponent_numbers_are_numbers(tmp_path, data_root):
    # PyYAML (YAML 1.1) reads 1e-4 as a string; tlexp reads it as YAML 1.2 does.
    p = write(
        tmp_path,
        f"data: {{root: {data_root}}}\ntrain: {{learning_rate: 1e-4}}\n"
        "sweep: {train.learning_rate: [3E-4, 1.5e-3]}\n",
    )
    assert load_config(p).train.learning_rate == 1e-4
    assert load_config(p).sweep == {"train.learning_rate": [3e-4, 1.5e-3]}
    assert load_config(p, ["train.learning_rate=2e-5"]).train.learning_rate == 2e-5
    assert load_config(p, ["name=run_1e5"]).name == "run_1e5"  # strings stay strings
    with pytest.raises(ConfigError, match=r"must be a number. Got '1e-4' \(str\)"):
        load_config(p, ["train.learning_rate='1e-4'"])  # quoted: a string, as asked


def test_relative_paths_resolve_against_cwd(tmp_path, data_root, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(None, ["data.root=imgs", "output.dir=out"])
    assert cfg.data.root == str(data_root.resolve())
    assert cfg.output.dir == str((tmp_path / "out").resolve())


def test_unknown_key_suggests_closest(data_root):
    with pytest.raises(ConfigError, match=r"Unknown key 'model.frezze'. Did you mean 'model.freeze'\?"):
        load_config(None, [f"data.root={data_root}", "model.frezze=0.3"])


def test_known_key_in_wrong_section_is_suggested(data_root):
    with pytest.raises(ConfigError, match=r"Unknown key 'epochs'. Did you mean 'train.epochs'\?"):
        load_config(None, [f"data.root={data_root}", "epochs=3"])


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("train.epochs=two", r"'train.epochs' parameter must be a whole number. Got 'two' \(str\)"),
        ("train.batch_size='32'", r"'train.batch_size' parameter must be a whole number. Got '32'"),
        ("forest.enabled=maybe", r"'forest.enabled' parameter must be true or false. Got 'maybe'"),
        ("data.group_near_duplicates=1", r"'data.group_near_duplicates' parameter must be true or false. Got 1"),
        ("model.head.dense=64", r"'model.head.dense' parameter must be a list. Got 64"),
        ("train=3", r"'train' is a section and must be a mapping"),
    ],
)
def test_wrong_types(data_root, override, match):
    with pytest.raises(ConfigError, match=match):
        load_config(None, [f"data.root={data_root}", override])


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("model.freeze=1.5", r"'model.freeze' parameter must be a float in the range \[0.0, 1.0\).* Got 1.5 instead"),
        ("model.freeze=-0.1", r"'model.freeze' parameter must be a float in the range \[0.0, 1.0\)"),
        ("data.image_size=16", r"'data.image_size' parameter must be >= 32. Got 16 instead"),
        ("train.epochs=0", r"'train.epochs' parameter must be >= 1. Got 0 instead"),
        ("train.learning_rate=0", r"'train.learning_rate' parameter must be > 0.0"),
        ("data.val_fraction=0", r"'data.val_fraction' parameter must be > 0.0 and < 1.0. Got 0.0"),
        ("model.head.dropout=1", r"'model.head.dropout' parameter must be >= 0.0 and < 1.0"),
        ("forest.n_jobs=0", r"'forest.n_jobs' parameter must be a positive number of jobs or -1"),
        ("model.head.dense=[64,0]", r"'model.head.dense' parameter must hold whole numbers >= 1 only"),
    ],
)
def test_out_of_range(data_root, override, match):
    with pytest.raises(ConfigError, match=match):
        load_config(None, [f"data.root={data_root}", override])


def test_near_duplicates_are_grouped_by_default(data_root):
    assert load_config(None, [f"data.root={data_root}"]).data.group_near_duplicates is True
    cfg = load_config(None, [f"data.root={data_root}", "data.group_near_duplicates=false"])
    assert cfg.data.group_near_duplicates is False
    (key,) = [row for row in describe() if row[0] == "data.group_near_duplicates"]
    assert "near-identical images" in key[-1]
    from tlexp.data import GAIN, HASH_BITS, NEAR_DUPLICATE_THRESHOLD

    # The schema's default and description say what the data check does (config imports no data code).
    (key,) = [row for row in describe() if row[0] == "data.near_duplicate_threshold"]
    assert load_config(None, [f"data.root={data_root}"]).data.near_duplicate_threshold == NEAR_DUPLICATE_THRESHOLD
    assert f"within {round(100 * (GAIN - 1))} %" in key[-1] and f"at most {HASH_BITS} bits" in key[-1]


def test_unknown_backbone_lists_choices(data_root):
    from tlexp.config import BACKBONE_NAMES

    with pytest.raises(ConfigError) as info:
        load_config(None, [f"data.root={data_root}", "model.backbone=efficientnetv2-b0"])
    msg = str(info.value)
    assert (
        f"'model.backbone' parameter must be one of the {len(BACKBONE_NAMES)} keras.applications backbones "
        "(did you mean 'efficientnetv2b0'?), by lowercase constructor name: convnextbase, "
    ) in msg
    assert msg.endswith("('tlexp weights' lists them with their files). Got 'efficientnetv2-b0' instead.")


def test_every_keras_applications_backbone_is_accepted_with_its_minimum_size(data_root):
    from tlexp.model import REGISTRY

    for name in ("vgg19", "efficientnetv2b0", "convnexttiny", "mobilenetv3small", "nasnetmobile", "xception"):
        assert load_config(None, [f"data.root={data_root}", f"model.backbone={name}"]).model.backbone == name
    assert REGISTRY["inceptionv3"].min_size == 75
    with pytest.raises(ConfigError) as info:
        load_config(None, [f"data.root={data_root}", "model.backbone=inceptionv3", "data.image_size=64"])
    assert (
        "The 'data.image_size' parameter must be at least 75 for model.backbone 'inceptionv3' "
        "(Keras' minimum input for InceptionV3). Got 64 instead"
    ) in str(info.value)
    assert load_config(None, [f"data.root={data_root}", "model.backbone=inceptionv3", "data.image_size=75"])


def test_fractions_leaving_empty_train_split(data_root):
    with pytest.raises(ConfigError, match=r"val_fraction \+ data.test_fraction must be below 1.0.*Got 0.5 \+ 0.5 = 1"):
        load_config(None, [f"data.root={data_root}", "data.val_fraction=0.5", "data.test_fraction=0.5"])


def test_missing_data_folder(tmp_path):
    with pytest.raises(ConfigError, match=r"'data.root' folder does not exist: '.*nowhere'"):
        load_config(None, [f"data.root={tmp_path / 'nowhere'}"])


def test_missing_weights_file(data_root, tmp_path):
    with pytest.raises(ConfigError, match=r"'model.weights' parameter must be 'imagenet', 'none' or an existing"):
        load_config(None, [f"data.root={data_root}", f"model.weights={tmp_path / 'w.h5'}"])


def test_yaml_syntax_error_has_line_number(tmp_path):
    p = write(tmp_path, "model:\n  freeze: 0.3\n  backbone: [vgg16\ntrain:\n  epochs: 2\n")
    with pytest.raises(ConfigError, match=r"YAML syntax error in '.*c.yaml' at line \d+, column \d+"):
        load_config(p)


def test_config_must_be_a_mapping(tmp_path):
    with pytest.raises(ConfigError, match=r"must be a YAML mapping .* Got a list"):
        load_config(write(tmp_path, "- a\n- b\n"))


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match=r"Config file not found: '.*nope.yaml'"):
        load_config(tmp_path / "nope.yaml")


def test_malformed_override(data_root):
    with pytest.raises(ConfigError, match=r"Override must look like key.sub=value .* Got 'model.freeze' instead"):
        load_config(None, [f"data.root={data_root}", "model.freeze"])


def test_every_problem_is_reported_at_once(tmp_path):
    p = write(
        tmp_path,
        f"data: {{root: {tmp_path / 'missing'}, image_size: 8}}\nmodel: {{freeze: 2, bakbone: x}}\n"
        "train: {epochs: 0}\n",
    )
    with pytest.raises(ConfigError) as info:
        load_config(p)
    problems = info.value.problems
    assert len(problems) == 5, problems
    text = str(info.value)
    for needle in ("data.image_size", "model.freeze", "model.bakbone", "train.epochs", "data.root"):
        assert needle in text


@pytest.mark.slow
def test_validation_lists_every_problem_before_any_heavy_import(tmp_path):
    # The whole point of validating first: a bad config fails at once, because nothing that
    # takes seconds to import (a deep-learning backend, plotting, scikit-learn) is loaded to
    # find its problems. A fresh process, so that other tests' imports do not count.
    import json
    import subprocess

    code = (
        "import json, sys\nfrom tlexp.config import load_config\nfrom tlexp.errors import ConfigError\n"
        "try:\n    load_config(None, ['train.epochs=0'])\n    problems = None\n"
        "except ConfigError as e:\n    problems = e.problems\n"
        "heavy = {'tensorflow', 'keras', 'jax', 'torch', 'matplotlib', 'sklearn', 'scipy', 'ray', 'mlflow'}\n"
        "imported = sorted(heavy & {m.split('.')[0] for m in sys.modules})\n"
        "print(json.dumps({'problems': problems, 'imported': imported}))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["imported"] == []
    # both problems, not just the first: epochs, and the default data.root missing under tmp_path
    assert len(out["problems"]) == 2, out["problems"]
    assert "'train.epochs' parameter must be >= 1. Got 0 instead" in out["problems"][0]
    assert "'data.root' folder does not exist" in out["problems"][1]


def test_describe_covers_every_leaf_key_with_description():
    rows = describe()
    keys = [r[0] for r in rows]
    assert "model.freeze" in keys and "data.synthetic.per_class" in keys and "forest.n_estimators" in keys
    assert all(r[3] for r in rows), [r[0] for r in rows if not r[3]]
    # Defaults printed are the schema's: parse them back and compare.
    defaults = Config().to_dict()
    for key, default, _, _ in rows:
        node = defaults
        for part in key.split("."):
            node = node[part]
        assert yaml.safe_load(default) == node, key


def test_run_name():
    assert Config().run_name() == "vgg16_f30_s0"
    cfg = Config.model_validate({"model": {"freeze": "block4_pool", "backbone": "resnet50"}, "seed": 2})
    assert cfg.run_name() == "resnet50_to-block4_pool_s2"
    assert Config.model_validate({"name": "mine"}).run_name() == "mine"


def test_shipped_configs_are_valid(monkeypatch, tmp_path):
    configs = sorted(Path(__file__).resolve().parents[1].joinpath("configs").glob("*.yaml"))
    names = {p.stem for p in configs}
    expected = {f"{b}_f{f}" for b in ("vgg16", "resnet50", "densenet121") for f in (10, 30, 50, 70)} | {"demo"}
    assert expected <= names, expected - names
    (tmp_path / "data").mkdir()
    for p in configs:
        # The data and a weights file live outside the repo (configs/fmnist_transfer.yaml names the
        # shared folder's); both must exist for validation: an empty folder, no file.
        raw = yaml.safe_load(p.read_text()) or {}
        external = (raw.get("model") or {}).get("weights") not in (None, "imagenet", "none")
        cfg = load_config(p, [f"data.root={tmp_path / 'data'}", *(["model.weights=none"] if external else [])])
        if "_f" in p.stem:  # a study cell, e.g. resnet50_f30
            backbone, f = p.stem.split("_f")
            assert cfg.model.backbone == backbone
            assert cfg.model.freeze == int(f) / 100
            assert cfg.run_name() == f"{p.stem}_s0"


def test_strategy_keys_and_their_errors(tmp_path):
    cfg = load_config(
        None, [f"data.root={tmp_path}", "model.train=block:conv4", "train.schedule=lp-ft", "train.layer_decay=1"]
    )
    assert (cfg.model.train, cfg.train.schedule, cfg.train.layer_decay) == ("block:conv4", "lp-ft", 1.0)
    assert cfg.run_name() == "vgg16_f30_blockconv4_lp-ft_s0"
    with pytest.raises(ConfigError) as e:
        load_config(
            None, [f"data.root={tmp_path}", "model.train=block:a/b", "train.schedule=warmup", "train.layer_decay=1.5"]
        )
    text = str(e.value)
    assert "'model.train' parameter must be 'all', 'biases', 'norm' or 'block:<number or name>'" in text
    assert "Got 'block:a/b' instead" in text
    assert "train.schedule" in text and "'warmup'" in text
    assert "train.layer_decay" in text and "1.5" in text


def test_a_sweep_may_list_several_grids(tmp_path):
    from tlexp.config import expand_sweep

    path = tmp_path / "s.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "sweep": [
                    {"model": {"freeze": [0.1, 0.3]}},  # nested keys, as in a single grid
                    {"model.freeze": [0.0], "model.train": ["block:2", "biases"]},
                    {"train.schedule": ["lp-ft"]},
                ]
            }
        )
    )
    cfg = load_config(path, [f"data.root={tmp_path}", "sweep.seed=[0,1]"])  # set in every grid
    assert cfg.swept_keys() == ["model.freeze", "seed", "model.train", "train.schedule"]
    cells = expand_sweep(cfg)
    assert [c.name for c in cells] == [
        "vgg16_f10_s0",
        "vgg16_f10_s1",
        "vgg16_f30_s0",
        "vgg16_f30_s1",
        "vgg16_f0_block2_s0",
        "vgg16_f0_block2_s1",
        "vgg16_f0_biases_s0",
        "vgg16_f0_biases_s1",
        "vgg16_f30_lp-ft_s0",
        "vgg16_f30_lp-ft_s1",
    ]
    # Each cell is the base with only its grid's values: the lp-ft cells keep the base's freeze and train.
    lp = cells[-1].config
    assert (lp.model.freeze, lp.model.train, lp.train.schedule) == (0.3, "all", "lp-ft")
    assert {c.config.data.split_seed for c in cells} == {0}  # one split for every grid's cells
    # A bad key or value is named with its grid's problems; an empty list of grids is refused.
    with pytest.raises(ConfigError, match="Unknown key 'sweep.model.trian'"):
        load_config(None, [f"data.root={tmp_path}", "sweep=[{model.freeze: [0.1]}, {model.trian: [all]}]"])
    with pytest.raises(ConfigError, match="sweep value model.train='blk'"):
        load_config(None, [f"data.root={tmp_path}", "sweep=[{model.train: [blk]}]"])
    with pytest.raises(ConfigError, match="lists no grid with a key"):
        load_config(None, [f"data.root={tmp_path}", "sweep=[{}]"])
