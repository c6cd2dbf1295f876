"""Tests for layerparallel.config (pure Python)."""

import json

import pytest

from layerparallel import config as C

EXPECTED_DEFAULTS = {
    "data": {"name": "peaks", "seed": 0, "train_size": 5000, "val_size": 200,
             "train_features": "", "train_labels": "", "val_features": "", "val_labels": "",
             "folder": "", "val_from": "test", "variant": "auto"},
    "model": {"kind": "dense", "channels": 4, "bias": "pixel", "width": 8, "layers": 32, "T": 5.0, "activation": "smooth_relu",
              "opening": "dense", "init": "uniform", "init_opening": 1e-3, "init_hidden": 1e-3,
              "init_classifier": 1e-3},
    "regularization": {"tikhonov": 1e-7, "classifier": 1e-7, "ddt": 1e-7},
    "optimizer": {"name": "lbfgs", "max_iter": 100, "epochs": 0, "memory": 10, "c1": 1e-4, "shrink": 0.5,
                  "max_trials": 20, "gtol": 1e-4, "learning_rate": 1e-2, "batch_size": 0,
                  "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "momentum": 0.0, "nesterov": False,
                  "weight_decay": 0.0, "decoupled": True, "schedule": "constant", "warmup_steps": 0,
                  "step_size": 0, "gamma": 0.1, "min_lr_factor": 0.0},
    "train": {"mode": "serial", "seed": 0, "threads": 0, "eval_every": 0, "checkpoint_every": 0,
              "full_eval": False, "device": "cpu", "params": ""},
    "parallel": {"layer_procs": 1, "data_procs": 0},
    "mgrit": {"max_levels": 10, "cfactor": 2, "cfactor_fine": 0, "min_coarse": 2, "relax": "F,FCF",
              "cycle": "V", "tol": 1e-11, "max_iter": 100, "fwd_iterations": 2, "bwd_iterations": 2,
              "threads": 0, "fmg": False, "skip_first_down": False, "store": "all", "compute_residuals": True, "safeguard": True,
              "safeguard_factor": 1.0, "safeguard_iterations": 5, "adaptive": False, "adaptive_eta": 0.1,
              "adaptive_max_cycles": 8},
}


def _toml(tmp_path, text, name="run.toml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_defaults():
    cfg = C.config_from_dict({})
    assert cfg.to_dict() == EXPECTED_DEFAULTS
    assert cfg.model.width == 8 and cfg.model.T == 5.0
    assert isinstance(cfg.model.T, float)
    assert cfg["optimizer"]["name"] == "lbfgs"
    assert C.default_config() == cfg


def test_load_file_and_base_dir(tmp_path):
    sub = tmp_path / "exp"
    sub.mkdir()
    p = _toml(sub, """
[model]
width = 16
T = 10          # int accepted for a float key
activation = "tanh"
opening = "expand"

[regularization]
ddt = 1e-5

[optimizer]
name = "adam"
batch_size = 64
""")
    cfg = C.load_config(p)
    assert cfg.model.width == 16
    assert cfg.model.T == 10.0 and isinstance(cfg.model.T, float)
    assert cfg.model.activation == "tanh" and cfg.model.opening == "expand"
    assert cfg.regularization.ddt == 1e-5
    assert cfg.optimizer.name == "adam" and cfg.optimizer.batch_size == 64
    assert cfg.model.layers == 32  # default kept
    assert cfg.base_dir == sub.resolve()


def test_overrides(tmp_path):
    p = _toml(tmp_path, "[model]\nwidth = 16\n")
    cfg = C.load_config(p, overrides=["model.width=4", "model.activation=relu",
                                      'optimizer.name="gd"', "regularization.tikhonov=1e-6",
                                      "model.T=2", "train.threads = 2"])
    assert cfg.model.width == 4
    assert cfg.model.activation == "relu"
    assert cfg.optimizer.name == "gd"
    assert cfg.regularization.tikhonov == 1e-6
    assert cfg.model.T == 2.0
    assert cfg.train.threads == 2
    # with_overrides returns a new object, the old one is unchanged
    cfg2 = cfg.with_overrides(["model.layers=64"])
    assert cfg2.model.layers == 64 and cfg.model.layers == 32
    assert cfg2.base_dir == cfg.base_dir


def test_overrides_complete_files_config(tmp_path):
    # data paths required by name = "files" may come from overrides
    p = _toml(tmp_path, '[data]\nname = "files"\n')
    cfg = C.load_config(p, [f"data.{k}=x/{k}.dat" for k in
                            ("train_features", "train_labels", "val_features", "val_labels")])
    assert cfg.data.val_labels == "x/val_labels.dat"


@pytest.mark.parametrize("text,expected", [
    ("model.width=3", ("model", "width", 3)),
    ("regularization.ddt=1e-7", ("regularization", "ddt", 1e-7)),
    ('model.activation="tanh"', ("model", "activation", "tanh")),
    ("model.activation=tanh", ("model", "activation", "tanh")),
    ("data.train_features=../data/x y.dat", ("data", "train_features", "../data/x y.dat")),
    ("data.train_features=", ("data", "train_features", "")),
    ("train.mode = serial", ("train", "mode", "serial")),
    ("model.T=2.5", ("model", "T", 2.5)),
])
def test_parse_override(text, expected):
    got = C.parse_override(text)
    assert got == expected
    assert type(got[2]) is type(expected[2])


def test_parse_override_bool_value():
    sec, key, value = C.parse_override("model.width=true")
    assert value is True


@pytest.mark.parametrize("text,fragment", [
    ("model.width", "section.key=value"),
    ("width=3", "section.key=value"),
    ("a.b.c=3", "section.key=value"),
    ("nosuch.levels=3", "'nosuch'"),
    ("mgrit.levels=3", "mgrit.levels"),
    ("model.widht=3", "model.widht"),
])
def test_parse_override_errors(text, fragment):
    with pytest.raises(ValueError, match=fragment.replace(".", r"\.").replace("(", r"\(")):
        C.parse_override(text)


# Every validation error names the key as section.key.
BAD_VALUES = [
    ("model", "width", 0, ">= 1"),
    ("model", "width", True, "type int"),
    ("model", "width", 2.0, "type int"),
    ("model", "width", "8", "type int"),
    ("model", "layers", 0, ">= 1"),
    ("model", "T", 0, "> 0"),
    ("model", "T", -1.0, "> 0"),
    ("model", "T", "5", "type float"),
    ("model", "T", True, "type float"),
    ("model", "T", float("nan"), "finite"),
    ("model", "T", float("inf"), "finite"),
    ("model", "activation", "sigmoid", "smooth_relu"),
    ("model", "activation", 1, "type str"),
    ("model", "opening", "conv", "needs model.kind"),
    ("regularization", "tikhonov", -1e-7, ">= 0"),
    ("regularization", "classifier", -1, ">= 0"),
    ("regularization", "ddt", -1e-3, ">= 0"),
    ("optimizer", "name", "rmsprop", '"lbfgs", "gd", "adam", "sgd"'),
    ("optimizer", "max_iter", -1, ">= 0"),
    ("optimizer", "memory", 0, ">= 1"),
    ("optimizer", "c1", 0, "(0, 1)"),
    ("optimizer", "c1", 1, "(0, 1)"),
    ("optimizer", "shrink", 1.5, "(0, 1)"),
    ("optimizer", "shrink", 0.0, "(0, 1)"),
    ("optimizer", "max_trials", 0, ">= 1"),
    ("optimizer", "learning_rate", 0, "> 0"),
    ("optimizer", "batch_size", -1, ">= 0"),
    ("optimizer", "beta1", 1.0, "[0, 1)"),
    ("optimizer", "beta1", -0.1, "[0, 1)"),
    ("optimizer", "beta2", 1, "[0, 1)"),
    ("optimizer", "eps", 0, "> 0"),
    ("train", "mode", "oneshot", '"serial", "exact", "simultaneous"'),
    ("train", "threads", -1, ">= 0"),
    ("train", "eval_every", -1, ">= 0"),
    ("optimizer", "epochs", -1, ">= 0"),
    ("train", "seed", -1, ">= 0"),
    ("data", "name", "cifar10", '"peaks", "files", "mnist"'),
    ("data", "seed", -3, ">= 0"),
    ("data", "seed", 1.5, "type int"),
    ("data", "train_size", 0, ">= 1"),
    ("data", "val_size", 0, ">= 1"),
    ("data", "train_size", 5001, "multiple of 5"),
    ("data", "train_features", 3, "type str"),
]


@pytest.mark.parametrize("section,key,value,fragment", BAD_VALUES)
def test_validation_errors_name_the_key(section, key, value, fragment):
    with pytest.raises(ValueError) as info:
        C.config_from_dict({section: {key: value}})
    msg = str(info.value)
    assert f"{section}.{key}" in msg, msg
    assert fragment in msg, msg


def test_wrong_type_message_has_expected_and_given():
    with pytest.raises(ValueError) as info:
        C.config_from_dict({"model": {"width": "8"}})
    msg = str(info.value)
    assert msg == "model.width must be of type int, got str '8'."


@pytest.mark.parametrize("section,key,value", [
    ("model", "T", 0.001), ("optimizer", "c1", 0.999), ("optimizer", "beta1", 0),
    ("optimizer", "max_iter", 0), ("regularization", "ddt", 0), ("train", "threads", 0),
    ("data", "train_size", 5), ("optimizer", "batch_size", 0),
])
def test_boundary_values_accepted(section, key, value):
    cfg = C.config_from_dict({section: {key: value}})
    assert cfg[section][key] == value


def test_unknown_section_and_key():
    with pytest.raises(ValueError, match="'nosuch'"):
        C.config_from_dict({"nosuch": {"levels": 2}})
    with pytest.raises(ValueError, match=r"mgrit\.levels"):
        C.config_from_dict({"mgrit": {"levels": 2}})
    with pytest.raises(ValueError, match=r"model\.depth"):
        C.config_from_dict({"model": {"depth": 2}})
    with pytest.raises(ValueError, match="'model' must be a table"):
        C.config_from_dict({"model": 3})


@pytest.mark.parametrize("key", ["train_features", "train_labels", "val_features", "val_labels"])
def test_files_requires_paths(key):
    paths = {k: "a.dat" for k in ("train_features", "train_labels", "val_features", "val_labels")}
    paths[key] = ""
    with pytest.raises(ValueError, match=rf"data\.{key} is required"):
        C.config_from_dict({"data": {"name": "files", **paths}})
    # with all four given it is fine, and the size need not be a multiple of 5
    paths[key] = "b.dat"
    cfg = C.config_from_dict({"data": {"name": "files", "train_size": 4001, **paths}})
    assert cfg.data.train_size == 4001


def test_override_validation_names_key(tmp_path):
    p = _toml(tmp_path, "[model]\nwidth = 16\n")
    with pytest.raises(ValueError, match=r"optimizer\.c1"):
        C.load_config(p, ["optimizer.c1=2"])
    with pytest.raises(ValueError, match=r"model\.width.*type int.*bool"):
        C.load_config(p, ["model.width=true"])
    with pytest.raises(ValueError, match=r"model\.activation"):
        C.config_from_dict({}).with_overrides(["model.activation=gelu"])


def test_file_errors_name_the_file(tmp_path):
    with pytest.raises(ValueError, match="missing.toml"):
        C.load_config(tmp_path / "missing.toml")
    bad = _toml(tmp_path, "[model\nwidth = 3\n", name="broken.toml")
    with pytest.raises(ValueError, match="broken.toml"):
        C.load_config(bad)
    bin_file = tmp_path / "binary.toml"
    bin_file.write_bytes(b"\xff\xfe\x00[model]")
    with pytest.raises(ValueError, match="binary.toml"):
        C.load_config(bin_file)
    bad_value = _toml(tmp_path, "[model]\nwidth = 0\n", name="zero.toml")
    with pytest.raises(ValueError) as info:
        C.load_config(bad_value)
    assert "zero.toml" in str(info.value) and "model.width" in str(info.value)


def test_to_json_stable_and_round_trips(tmp_path):
    a = C.config_from_dict({"model": {"width": 4, "T": 1}})
    b = C.config_from_dict({"model": {"T": 1.0, "width": 4}})
    assert a.to_json() == b.to_json()
    d = json.loads(a.to_json())
    assert d["model"]["width"] == 4 and d["model"]["T"] == 1.0
    assert list(d) == sorted(d)
    assert list(d["optimizer"]) == sorted(d["optimizer"])
    assert C.config_from_dict(d) == a
    # to_dict is a copy
    a.to_dict()["model"]["width"] = 99
    assert a.model.width == 4


def test_sections_read_only():
    cfg = C.config_from_dict({})
    with pytest.raises(AttributeError):
        cfg.model.width = 3
    with pytest.raises(AttributeError):
        cfg.model.no_such_key
    with pytest.raises(AttributeError):
        cfg.no_such_section


def test_schema_is_a_single_table():
    assert set(C.SCHEMA) == set(EXPECTED_DEFAULTS)
    for sec, keys in C.SCHEMA.items():
        assert {k: spec.default for k, spec in keys.items()} == EXPECTED_DEFAULTS[sec]


def test_data_section_feeds_load_dataset(tmp_path):
    from layerparallel import data as D
    cfg = C.config_from_dict({"data": {"train_size": 50, "val_size": 10, "seed": 2}},
                             base_dir=tmp_path)
    ds = D.load_dataset(cfg.data, cfg.base_dir)
    assert ds.n_train == 50 and ds.n_val == 10
    assert (ds.train_x == D.generate_peaks(50, 10, seed=2).train_x).all()


@pytest.mark.parametrize("relax", ["F", "FCF", "F,FCF", "F, FCF, FCFCF", "f fcf"])
def test_relax_accepts_per_level_lists(relax):
    cfg = C.config_from_dict({"mgrit": {"relax": relax}})
    assert all(t.upper().startswith("F") for t in C.relax_levels(cfg.mgrit.relax))


@pytest.mark.parametrize("relax", ["", "C", "FC", "F,,X", "FCFC"])
def test_relax_rejects_bad_patterns(relax):
    with pytest.raises(ValueError, match="mgrit.relax"):
        C.config_from_dict({"mgrit": {"relax": relax}})
