"""Typed configuration: one dataclass per section, presets in TOML, ``--set`` overrides.

Every setting has one kebab-case name used everywhere: ``train.batch-size`` on the
command line (``--set train.batch-size=64``), in a preset TOML (``[train]`` /
``batch-size = 64``) and in Flower's run config (``--run-config "train.batch-size=64"``).
Presets ship in ``dfflab/presets/`` (``quick``: SynthDFF on a CPU in minutes; ``full``:
DFF on a GPU; ``tiny``: seconds, for tests). A preset only overrides what differs from
the defaults below, and may name a ``base`` preset it extends. Unknown keys are errors.

Stage sections (``ssl``, ``fl``, ``gan``, ``uq``) live beside their stage so each stage
owns its settings; this module assembles them.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from dfflab.federated.config import FLConfig
from dfflab.generative.config import GANConfig
from dfflab.settings import ConfigError, doc
from dfflab.ssl.config import SSLConfig
from dfflab.uq.config import UQConfig

__all__ = ["Config", "ConfigError", "DataConfig", "ModelConfig", "TrainConfig", "apply_dict", "config_from_dict",
           "doc", "help_table", "load_config", "preset_names", "set_value"]


@dataclass
class DataConfig:
    root: str = doc("results/data/synthdff", "Dataset root: DFF folders or zips, a generic real/fake tree, or SynthDFF.")
    store: str = doc("", "Prepared store folder; empty = <results>/data/<root name>-store-<image-size>[-jpeg<q>], so a "
                     "read-only dataset folder works.", result=False)
    image_size: int = doc(64, "Side in pixels of the square, centre-cropped images every stage trains on.")
    n_real: int = doc(1000, "SynthDFF: real photos to synthesize (total images = 4 x n-real).")
    difficulty: float = doc(1.0, "SynthDFF: artifact strength of the fakes (0 = invisible, 2 = blatant).")
    fake_size: int = doc(128, "SynthDFF: side of the square fakes (DFF's are 512).")
    real_min: int = doc(80, "SynthDFF: smallest native side of a real photo.")
    real_max: int = doc(224, "SynthDFF: largest native side of a real photo.")
    jpeg_quality: int = doc(0, "Re-encode every image as JPEG at this quality (1-100) before crop and resize, so every image's last compression is the same (traces of an earlier, lower quality can survive); 0 = off.")
    val_frac: float = doc(0.15, "Share of relative paths (a real and its fakes) in the validation split; linked paths (partners, groups.csv) move together.")
    test_frac: float = doc(0.15, "Share of relative paths in the test split.")
    split_seed: int = doc(0, "Seed of the grouped split; fixed so every stage sees the same split.")
    max_bad_frac: float = doc(0.05, "Fail prepare when more than this share of files is unreadable.", result=False)
    workers: int = doc(0, "Decoding processes for prepare (0 = all cores).", result=False)


@dataclass
class ModelConfig:
    backbone: str = doc("resnet-narrow", "Backbone: resnet18 (DFF on a GPU), resnet18-small (3x3 stem), resnet-narrow (2 CPU cores); "
                        "with ImageNet/CLIP weights (model.pretrained): resnet34, resnet50, efficientnet_b0, convnext_tiny, "
                        "vit_b_16, clip-vit-b-32, clip-vit-l-14, inception, inception-frozen.")
    dropout: float = doc(0.2, "Dropout before the detector's head (also what MC dropout samples).")
    width: int = doc(16, "resnet-narrow: channels of the first stage (doubles each stage); 16 trains at ~1,300 img/s at 64 px on 2 cores.")
    pretrained: str = doc("none", "Starting weights: none (random init), imagenet (torchvision: resnet18/34/50, efficientnet_b0, "
                          "convnext_tiny, vit_b_16; inception, inception-frozen: bundled, offline), clip (clip-vit-b-32, "
                          "clip-vit-l-14; pip install -e \".[clip]\"). Downloaded once into torch's cache.")
    input_size: int = doc(0, "Side the backbone sees (images are resized inside the model); 0 = the pretrained "
                          "network's own (224; Inception 299), or the store's for a scratch backbone.")
    head: str = doc("linear", "Detector head: linear, or mlp (BatchNorm, one hidden GELU layer, dropout): better on frozen features.")
    head_hidden: int = doc(256, "Hidden width of the mlp head.")
    inception_blocks: list = doc(["mixed_3", "mixed_4", "mixed_5"], "inception backbones: blocks whose pooled "
                                 "outputs are the features (mid-level ones beat the final pool on face swaps).")
    feature_cache: str = doc("", "inception-frozen: folder of cached features (empty = ~/.cache/dfflab/features).")


@dataclass
class TrainConfig:
    epochs: int = doc(12, "Training epochs (upper bound: early stopping may end sooner).")
    batch_size: int = doc(128, "Images per step.")
    lr: float = doc(2e-3, "Peak learning rate of AdamW after warmup.")
    weight_decay: float = doc(0.05, "AdamW weight decay.")
    warmup_epochs: float = doc(1.0, "Linear warmup length in epochs before the cosine decay.")
    patience: int = doc(4, "Early stopping: validations without a better val AUROC before stopping.")
    eval_every: int = doc(1, "Epochs between validations (and test logging); the last epoch is always validated. "
                          "Runs with many tiny epochs (1% of labels at matched steps) validate as often as a full run.")
    balance: str = doc("weight", "Class imbalance (1 real : 3 fakes): weight (loss pos_weight), sample (balanced sampler), none.")
    augment: str = doc("flip-crop", "Tensor augmentations: none, flip, flip-crop (no colour/blur: they erase artifacts).")
    label_frac: float = doc(1.0, "Share of training labels used (label-efficiency experiments).")
    train_sources: list = doc([], "Fake sources in the training set (reals always included); empty = every fake source the store holds.")
    test_sources: list = doc([], "Fake sources in the test set; empty = every fake source the store holds.")
    init: str = doc("scratch", "Backbone init: scratch, or an SSL run folder or backbone checkpoint.")
    freeze: str = doc("none", "none (fine-tune everything), backbone (train only the head: a linear/MLP probe), "
                      "partial (freeze the lower half of the backbone's blocks).")
    layer_decay: float = doc(1.0, "Layer-wise lr decay for fine-tuning: block i of n trains at lr x decay^(n-i), "
                             "the head at lr (1 = off; 0.7-0.8 usual for pretrained backbones).")
    seed: int = doc(0, "Seed of weights, sampling and augmentation.")
    device: str = doc("auto", "auto, cpu, cuda, cuda:N or mps.")
    amp: bool = doc(True, "bf16 autocast on a GPU (ignored on a CPU).")
    threads: int = doc(0, "torch CPU threads (0 = all cores).", result=False)
    audit: bool = doc(True, "Run the metadata shortcut audit (seconds) with each centralized training run.",
                      result=False)
    bootstrap: int = doc(1000, "Stratified bootstrap resamples behind every 95% interval in summary.json "
                         "(reals and fakes resampled separately; 0 = no intervals).")


@dataclass
class PipelineConfig:
    """What ``dfflab pipeline`` runs beyond one run per method (no single run reads these)."""

    seeds: list = doc(["0"], "Seeds (train.seed) of the centralized detectors the report compares (scratch and "
                      "each SSL init): one run per seed; the report shows mean, spread and paired intervals.",
                      result=False)
    fl_seeds: list = doc(["0"], "Seeds of the federated runs and the local-only baseline.", result=False)
    fl_search: bool = doc(False, "Run the federated recipe search (`dfflab federated search`) first and train the "
                          "by-source runs with its accepted recipe; off: the preset's [fl] is the recipe.",
                          result=False)
    fl_ssl: list = doc(["byol"], "The fully federated path, per method: federated SSL (`dfflab federated ssl`), then "
                       "FedAvg by source from its backbone, beside FedAvg from the centralized SSL backbone ([] = "
                       "skip).", result=False)
    dp_noises: list = doc(["0.001", "0.01", "1"], "Noise multipliers of the DP-FedAvg runs (FedAvg by source, "
                          "pipeline.dp-clip) for the privacy-utility curve; 0 = clipping only ([] = none).",
                          result=False)
    dp_clip: float = doc(1.0, "Clip C of those runs: about the median client update norm (weights) over the "
                         "rounds of quick's FedAvg by source (1.0 in round 1, 1.9 in round 2, 0.06 in round 10).",
                         result=False)


@dataclass
class Config:
    """All of dfflab's settings. Build with :func:`load_config`."""

    results: str = doc("results", "Output folder: runs go to <results>/runs/.", result=False)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    ssl: SSLConfig = field(default_factory=SSLConfig)
    fl: FLConfig = field(default_factory=FLConfig)
    gan: GANConfig = field(default_factory=GANConfig)
    uq: UQConfig = field(default_factory=UQConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def flat(self) -> dict[str, Any]:
        """``{"train.batch-size": 128, ...}``: the names used by --set and Flower."""
        return {k: v for k, v in _walk(self)}

    @property
    def store_dir(self) -> Path:
        """``data.store``, or ``<results>/data/<root name>-store-<size>[-jpeg<q>]``.

        Under the results folder, not beside the data, so a read-only dataset works;
        ``prepare`` rebuilds a store made from another root (its fingerprint differs).
        """
        d = self.data
        return Path(d.store) if d.store else default_store_dir(self.results, d.root, d.image_size, d.jpeg_quality)


def default_store_dir(results: str, root: str, image_size: int, jpeg_quality: int = 0) -> Path:
    """``<results>/data/<root name>-store-<image size>[-jpeg<quality>]``."""
    name = Path(str(root).rstrip("/")).name or "data"
    quality = f"-jpeg{jpeg_quality}" if jpeg_quality else ""
    return Path(results) / "data" / f"{name}-store-{image_size}{quality}"


def kebab(name: str) -> str:
    return name.replace("_", "-")


def _walk(obj: Any, prefix: str = ""):
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        key = prefix + kebab(f.name)
        if dataclasses.is_dataclass(value):
            yield from _walk(value, key + ".")
        else:
            yield key, value


def _resolve(obj: Any, key: str) -> tuple[Any, dataclasses.Field]:
    """Find the (section object, field) that a dotted kebab-case key names."""
    parts = key.split(".")
    target = obj
    for i, part in enumerate(parts):
        fields = {kebab(f.name): f for f in dataclasses.fields(target)}
        if part not in fields:
            where = ".".join(parts[:i]) or "top level"
            raise ConfigError(f"unknown setting '{key}': '{part}' is not in {where} "
                              f"(known: {', '.join(sorted(fields))})")
        f = fields[part]
        if i == len(parts) - 1:
            if dataclasses.is_dataclass(getattr(target, f.name)):
                raise ConfigError(f"'{key}' is a section, not a setting")
            return target, f
        target = getattr(target, f.name)
        if not dataclasses.is_dataclass(target):
            raise ConfigError(f"unknown setting '{key}': '{part}' is a setting, not a section")
    raise ConfigError(f"empty setting name '{key}'")


def _field_type(obj: Any, f: dataclasses.Field) -> type:
    hints = typing.get_type_hints(type(obj))
    t = hints[f.name]
    if isinstance(t, types.UnionType):  # e.g. str | None
        t = next(a for a in typing.get_args(t) if a is not type(None))
    return typing.get_origin(t) or t


def _coerce(key: str, value: Any, t: type) -> Any:
    try:
        if t is bool:
            if isinstance(value, bool):
                return value
            s = str(value).strip().lower()
            if s in ("1", "true", "yes", "on"):
                return True
            if s in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if t is list:
            if isinstance(value, list | tuple):
                return [str(v) for v in value]
            s = str(value).strip()
            return [v.strip() for v in s.split(",") if v.strip()]
        if t is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError(value)
            return int(value)
        if t is float:
            if isinstance(value, bool):
                raise ValueError(value)
            return float(value)
        return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"setting '{key}' expects {t.__name__}, got {value!r}") from None


def set_value(cfg: Config, key: str, value: Any) -> None:
    """Set one dotted kebab-case setting, converting ``value`` to the field's type."""
    target, f = _resolve(cfg, key)
    setattr(target, f.name, _coerce(key, value, _field_type(target, f)))


def apply_dict(cfg: Config, values: dict[str, Any], source: str = "") -> None:
    """Apply a nested (TOML-shaped) or flat dotted dict of settings."""
    for key, value in _flatten(values):
        try:
            set_value(cfg, key, value)
        except ConfigError as e:
            raise ConfigError(f"{source}: {e}" if source else str(e)) from None


def _flatten(values: dict[str, Any], prefix: str = ""):
    for k, v in values.items():
        if isinstance(v, dict):
            yield from _flatten(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


def preset_names() -> list[str]:
    files = resources.files("dfflab") / "presets"
    return sorted(p.name[:-5] for p in files.iterdir() if p.name.endswith(".toml"))


def _read_preset(preset: str | Path) -> tuple[dict[str, Any], str]:
    path = Path(preset)
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise ConfigError(f"preset file not found: {path}")
        text, where = path.read_text(), str(path)
    else:
        res = resources.files("dfflab") / "presets" / f"{preset}.toml"
        if not res.is_file():
            raise ConfigError(f"unknown preset '{preset}' (packaged: {', '.join(preset_names())}; "
                              "or give a path to a .toml file)")
        text, where = res.read_text(), f"preset {preset}"
    try:
        return tomllib.loads(text), where
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{where}: not valid TOML: {e}") from None


def load_config(preset: str | Path | None = "quick", overrides: list[str] | dict | None = None) -> Config:
    """Defaults, then the preset (and the presets it extends), then overrides.

    Args:
        preset: a packaged preset name (``quick``, ``full``, ``tiny``) or a TOML path;
            ``None`` keeps the plain defaults.
        overrides: ``["train.epochs=3", ...]`` strings or a flat/nested dict.
    """
    cfg = Config()
    chain: list[tuple[dict[str, Any], str]] = []
    seen: set[str] = set()
    while preset is not None:
        if str(preset) in seen:
            raise ConfigError(f"preset cycle through '{preset}'")
        seen.add(str(preset))
        values, where = _read_preset(preset)
        base = values.pop("base", None)
        chain.append((values, where))
        preset = base
    for values, where in reversed(chain):
        apply_dict(cfg, values, where)
    if isinstance(overrides, dict):
        apply_dict(cfg, overrides, "overrides")
    else:
        for item in overrides or []:
            if "=" not in item:
                raise ConfigError(f"override '{item}' must look like section.key=value")
            key, value = item.split("=", 1)
            set_value(cfg, key.strip(), value.strip())
    return cfg


def config_from_dict(values: dict[str, Any]) -> Config:
    """Rebuild a Config from ``Config.to_dict()`` output (e.g. a run's config.json)."""
    cfg = Config()
    snake = {}
    for key, value in _flatten(values):
        snake[".".join(kebab(p) for p in key.split("."))] = value
    apply_dict(cfg, snake, "config.json")
    return cfg


def help_table() -> str:
    """Every setting with its default and help text, for ``dfflab config``."""
    lines = []
    cfg = Config()
    for key, value in _walk(cfg):
        _, f = _resolve(cfg, key)
        lines.append(f"{key} = {value!r}\n    {f.metadata.get('help', '')}")
    return "\n".join(lines)


# Settings that hold paths: compared and passed on as absolute paths.
PATH_KEYS = ("results", "data.root", "data.store", "train.init")


def is_result_setting(key: str) -> bool:
    """Whether a setting can change what a run computes (``doc(..., result=False)`` says no)."""
    _, f = _resolve(Config(), key)
    return f.metadata.get("result", True)


def result_settings(cfg: Config, scope: tuple[str, ...]) -> dict[str, Any]:
    """``cfg``'s settings under ``scope`` (sections such as ``train``, single keys such as
    ``train.seed``, exclusions such as ``!ssl.label-fractions``) that can change a result, with
    path settings made absolute."""

    def under(key: str, items) -> bool:
        return any(key == s or key.startswith(s + ".") for s in items)

    keep = [s for s in scope if not s.startswith("!")]
    drop = [s[1:] for s in scope if s.startswith("!")]
    out = {}
    for key, value in cfg.flat().items():
        if not under(key, keep) or under(key, drop) or not is_result_setting(key):
            continue
        if key in PATH_KEYS and value not in ("", "scratch"):
            value = str(Path(value).resolve())
        out[key] = value
    return out


def derive(cfg: Config, overrides: dict[str, Any], source: str = "derived") -> Config:
    """A copy of ``cfg`` with dotted kebab-case ``overrides`` applied (``{"ssl.views": "crop"}``)."""
    out = config_from_dict(cfg.to_dict())
    apply_dict(out, overrides, source)
    return out
