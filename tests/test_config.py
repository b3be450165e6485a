import pytest

from dfflab.config import Config, ConfigError, config_from_dict, load_config, preset_names


def test_presets_load_and_tiny_extends_quick():
    assert {"quick", "tiny", "full"} <= set(preset_names())
    quick, tiny = load_config("quick"), load_config("tiny")
    assert tiny.data.image_size == 32 and tiny.model.width == 8
    # tiny names quick as its base: what it doesn't set comes from quick, not the defaults
    assert tiny.train.lr == quick.train.lr
    assert load_config("full").model.backbone == "efficientnet_b0"


def test_overrides_are_typed():
    cfg = load_config("quick", ["train.epochs=3", "train.lr=0.5", "train.amp=false",
                                "train.train-sources=insight, text2img"])
    assert cfg.train.epochs == 3 and isinstance(cfg.train.epochs, int)
    assert cfg.train.lr == 0.5 and cfg.train.amp is False
    assert cfg.train.train_sources == ["insight", "text2img"]


@pytest.mark.parametrize("override, message", [
    ("train.nope=1", "unknown setting 'train.nope'"),
    ("nosection.x=1", "unknown setting 'nosection.x'"),
    ("train.epochs=three", "expects int"),
    ("train.epochs=1.5", "expects int"),
    ("train.amp=maybe", "expects bool"),
    ("train=3", "is a section"),
    ("train.epochs", "must look like"),
])
def test_bad_overrides_fail_loudly(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config("quick", [override])


def test_unknown_key_in_preset_file_names_the_file(tmp_path):
    p = tmp_path / "mine.toml"
    p.write_text('base = "quick"\n[train]\nepochs = 2\nepoch = 3\n')
    with pytest.raises(ConfigError, match=r"mine.toml.*unknown setting 'train.epoch'"):
        load_config(p)
    p.write_text('[train\n')
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(p)
    with pytest.raises(ConfigError, match="unknown preset"):
        load_config("no-such-preset")


def test_user_preset_overrides_only_what_it_names(tmp_path):
    p = tmp_path / "mine.toml"
    p.write_text('base = "quick"\n[train]\nepochs = 2\n')
    cfg = load_config(p)
    assert cfg.train.epochs == 2 and cfg.data.n_real == load_config("quick").data.n_real


def test_flat_names_round_trip():
    cfg = load_config("tiny", ["train.epochs=5"])
    flat = cfg.flat()
    assert flat["train.batch-size"] == cfg.train.batch_size
    assert config_from_dict(cfg.to_dict()) == cfg
    assert load_config(None, flat) == cfg
    assert Config().store_dir.name.endswith("-store-64")
