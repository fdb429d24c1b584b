from dataclasses import dataclass, field

import pytest

from metarag.config import ConfigError, apply_override, load_config, save_config


@dataclass
class Optim:
    lr: float = 1e-4
    steps: int = 100

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")


@dataclass
class Experiment:
    name: str = "run"
    tasks: list[str] = field(default_factory=lambda: ["a"])
    seed: int | None = None
    optim: Optim = field(default_factory=Optim)


def test_defaults_file_and_overrides(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("name: demo\noptim:\n  lr: 3.0e-5\n")
    cfg = load_config(Experiment, path, ["optim.steps=7", "tasks=[x, y]", "seed=3"])
    assert cfg == Experiment(name="demo", tasks=["x", "y"], seed=3, optim=Optim(lr=3e-5, steps=7))
    assert load_config(Experiment) == Experiment()


def test_ints_become_floats_and_single_values_lists():
    assert load_config(Experiment, None, ["optim.lr=3e-4"]).optim.lr == 3e-4  # YAML: a str
    cfg = load_config(Experiment, None, ["optim.lr=1", "tasks=solo"])
    assert cfg.optim.lr == 1.0 and isinstance(cfg.optim.lr, float)
    assert cfg.tasks == ["solo"]


def test_unknown_key_names_its_path(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown key optim\.lrr.*known keys under optim: lr"):
        load_config(Experiment, None, ["optim.lrr=1"])


def test_wrong_type_and_validation_name_the_field():
    with pytest.raises(ConfigError, match=r"optim\.steps must be int"):
        load_config(Experiment, None, ["optim.steps=many"])
    with pytest.raises(ConfigError, match=r"optim: lr must be positive"):
        load_config(Experiment, None, ["optim.lr=-1"])


def test_bad_files_and_overrides(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(Experiment, tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: malformed YAML"):
        load_config(Experiment, bad)
    with pytest.raises(ConfigError, match="expected key.path=value"):
        apply_override({}, "novalue")
    with pytest.raises(ConfigError, match="is a value, not a section"):
        apply_override({"name": "x"}, "name.sub=1")


def test_saved_config_loads_back(tmp_path):
    cfg = Experiment(name="saved", tasks=["p", "q"], optim=Optim(lr=2e-3, steps=5))
    path = save_config(cfg, tmp_path / "run" / "config.yaml")
    assert load_config(Experiment, path) == cfg
