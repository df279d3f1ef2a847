"""Stage 2's options (data, model, training, parallel runs) and the configuration they make."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from click.core import ParameterSource

from vafusion.cli.options import _device_option, _ranged, _setting, _stacked
from vafusion.errors import VafusionError
from vafusion.fusion.runs.config import RECIPES, WINDOWS, DataConfig, TrainingConfig, training_recipe
from vafusion.fusion.runs.schedule import SCHEDULES

if TYPE_CHECKING:
    from vafusion.fusion.runs.config import FusionConfig


# Flags of the CLI before models declared their own options: still accepted (hidden), each
# mapped onto the model option of that name, with a note pointing to --model-option.
_DEPRECATED_MODEL_FLAGS = {
    "--d-model": ("d_model", int),
    "--heads": ("heads", int),
    "--dropout": ("dropout", float),
    "--ridge-alpha": ("alpha", float),
    "--ridge-context": ("context", int),
}


def _runs_option(help: str) -> Callable:
    """``--runs RUNS`` (required), declared alike by cv and compare; each says what goes in it."""
    return click.option(
        "--runs", "runs_dir", required=True, type=click.Path(file_okay=False, path_type=Path), help=help
    )


def _seeds_option(help: str) -> Callable:
    """``--seeds K`` (1 and up), declared alike by cv and compare; each says what it repeats."""
    return click.option("--seeds", default=1, show_default=True, type=click.IntRange(1), help=help)


def _report_option(default: bool, help: str) -> Callable:
    """``--report/--no-report``, declared alike by train, cv and compare; each has its default and help."""
    return click.option("--report/--no-report", default=default, show_default=True, help=help)


def _data_options(feature_sets: bool = False):
    """--features, --window, --hop, --audio-where-speech (DataConfig); ``feature_sets``: several sets, as
    `compare` takes them."""
    d = DataConfig()
    if feature_sets:
        features = click.option(
            "--features",
            "features",
            multiple=True,
            default=[",".join(d.features)],
            show_default=True,
            help="Feature sets to compare, ';'-separated (repeatable), each comma-separated; "
            "the first feature of a set is its visual query stream.",
        )
    else:
        features = click.option(
            "--features",
            default=",".join(d.features),
            show_default=True,
            help="Comma-separated feature sets of the cache; the first is the visual query "
            "stream, the others audio key/value streams (one alone = unimodal).",
        )
    return _stacked(
        [
            features,
            _setting(DataConfig, "window", "Frames per training window."),
            _setting(DataConfig, "hop", "Frames between window starts."),
            _setting(
                DataConfig,
                "audio_where_speech",
                "Treat the audio streams (features extracted from the audio track) as absent where the "
                "cache's vad feature (speech probability, `extract --features vad`) is below this, e.g. 0.5; "
                "recorded in the run's config, so evaluate and predict apply it too. [default: off]",
            ),
        ]
    )


def _model_options(several: bool = False):
    """--model (or --models), --model-option, --causal, and the deprecated per-model flags."""
    from vafusion.fusion.models import BUILTINS, DEFAULT_MODEL

    names = ", ".join(BUILTINS)
    if several:
        model = click.option(
            "--models",
            "models",
            required=True,
            help=f"Comma-separated models to compare: built-ins ({names}), package.module:Class, "
            f"or installed plug-in names (see `vafusion models`).",
        )
    else:
        model = click.option(
            "--model",
            default=DEFAULT_MODEL,
            show_default=True,
            help=f"A built-in ({names}; 'fusion' = imf), package.module:Class, or an installed "
            f"plug-in's name. `vafusion models` lists them with their options.",
        )
    scope = "each model that has it" if several else "the model"
    hidden = [
        click.option(flag, hidden=True, default=None, type=kind) for flag, (_, kind) in _DEPRECATED_MODEL_FLAGS.items()
    ]
    return _stacked(
        [
            model,
            click.option(
                "--model-option",
                "model_options",
                multiple=True,
                metavar="KEY=VALUE",
                help=f"An option of {scope} (repeatable), e.g. d_model=64 or tcn_dilations=1,2,4; values are "
                f"typed as the model declares (int, float, true/false, text). See `vafusion models`.",
            ),
            click.option(
                "--causal",
                is_flag=True,
                help="Causal model (no future frames; for online use): the model's 'causal' option. An error "
                "for a model without one.",
            ),
            *hidden,
        ]
    )


def _recipe_setting(name: str, help: str, choices: tuple[str, ...] | None = None):
    """``--<name>`` for a TrainingConfig setting a recipe chooses: unset (None) means the recipe's value,
    which --help shows for each recipe."""
    defaults = "; ".join(f"{r}: {training_recipe(r).__dict__[name]}" for r in RECIPES)
    kind = click.Choice(choices) if choices else _ranged(TrainingConfig, name)
    return click.option(
        f"--{name.replace('_', '-')}", default=None, type=kind, show_default=f"--recipe {defaults}", help=help
    )


def _training_options(f):
    """--recipe, --epochs ... --device (TrainingConfig)."""
    return _stacked(
        [
            click.option(
                "--recipe",
                type=click.Choice(list(RECIPES)),
                default="fast",
                show_default=True,
                help="Defaults of the training settings below. fast: chosen for time to quality (random window "
                "offsets, short warm-up, cosine schedule, small batches, every 2nd frame, early stop on a "
                "plateau). v1: the recipe of vafusion before it, to reproduce earlier runs (imf and interactive were "
                "128 wide then: add --model-option d_model=128). Options given override it.",
            ),
            _recipe_setting(
                "epochs",
                "Training epochs at most (--patience may stop earlier; closed-form models ignore it).",
            ),
            _recipe_setting("batch_size", "Windows per step."),
            _recipe_setting("lr", "Peak AdamW learning rate."),
            _recipe_setting(
                "schedule",
                "Learning rate: warm-up, then cosine to 5% of --lr. cosine: warm-up over half an epoch (at most 200 "
                "steps); v1: over 10% of all steps (at most 200).",
                tuple(SCHEDULES),
            ),
            _recipe_setting(
                "windows",
                "Training windows: random shifts the grid of --hop by a random offset per video and epoch (every "
                "frame still in a window each epoch); grid: the same grid every epoch.",
                WINDOWS,
            ),
            _recipe_setting(
                "stride",
                "Temporal stride K: the model sees every K-th frame (--window and --hop count those, so a window "
                "spans K x --window frames); training takes one phase (frames p, p+K, ...) per video and epoch, "
                "rotating, and validation, evaluate and predict run all K phases and interleave them, so every "
                "frame is predicted. Recorded in the run's config.",
            ),
            _setting(TrainingConfig, "weight_decay", "AdamW weight decay."),
            _setting(TrainingConfig, "mse_weight", "Weight of an extra MSE term in the loss."),
            _recipe_setting("patience", "Stop after this many epochs without a better validation P..."),
            _recipe_setting("min_epochs", "...but not before this epoch."),
            _setting(
                TrainingConfig,
                "seed",
                "Seed of the initial weights, the shuffling and dropout (a ridge: its subsample).",
            ),
            _device_option(TrainingConfig().device),
        ]
    )(f)


def _split_options(f):
    """--split, --folds, --fold: which ids train and which validate (train, tune)."""
    return _stacked(
        [
            click.option(
                "--split",
                type=click.Choice(["official", "folds"]),
                default=None,
                help="official: Train_Set trains, Validation_Set validates [default]. folds: both merged and "
                "split by video (see --folds/--fold).",
            ),
            click.option(
                "--folds",
                default=6,
                show_default=True,
                type=_ranged(DataConfig, "folds"),
                help="Number of folds (implies --split folds with --fold).",
            ),
            click.option(
                "--fold",
                type=_ranged(DataConfig, "fold"),
                default=None,
                help="Which fold (1..N) validates; implies --split folds.",
            ),
        ]
    )(f)


def _params_option(f):
    """--params FILE: a tuned configuration (best.json of `vafusion tune`) as the defaults (train, cv)."""
    return click.option(
        "--params",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help="A tuned configuration (DIR/best.json of `vafusion tune`): its model, model options, features, "
        "window, hop and training settings, unless given here; the split and the device are this command's.",
    )(f)


def _parse_devices(ctx: click.Context, param: click.Parameter, value: str | None) -> list[str] | None:
    from vafusion.fusion.experiments.parallel import parse_devices

    return None if value is None else parse_devices(value)


def _parallel_options(f):
    """--jobs, --devices: independent runs in worker processes (cv, compare)."""
    return _stacked(
        [
            click.option(
                "--jobs",
                "workers",
                type=click.IntRange(1),
                default=None,
                help="Runs trained at once, each in its own process with an equal share of the CPU threads "
                "(results equal a one-at-a-time run's up to float rounding); a run that fails is "
                "reported at the end, the others finish.  [default: 1, or one per --devices entry]",
            ),
            click.option(
                "--devices",
                callback=_parse_devices,
                metavar="D1,D2,...",
                help="Devices for the runs, e.g. cuda:0,cuda:1: worker processes go round-robin over them, "
                "each keeps its device (overrides --device).",
            ),
        ]
    )(f)


def _model_option_values(model_options: tuple[str, ...], causal: bool, kw: dict) -> dict:
    """--model-option pairs, --causal and the deprecated flags (popped from ``kw``) as one options dict."""
    from vafusion.fusion.models import parse_model_options

    options = parse_model_options(model_options)
    for flag, (option, _) in _DEPRECATED_MODEL_FLAGS.items():
        value = kw.pop(flag.lstrip("-").replace("-", "_"), None)
        if value is None:
            continue
        if option in options:
            raise VafusionError(f"{flag} and --model-option {option}: give it once")
        click.echo(f"note: {flag} is deprecated; use --model-option {option}={value}", err=True)
        options[option] = value
    if causal:
        options["causal"] = True
    return options


def _parts(kw: dict) -> tuple[dict, TrainingConfig]:
    """The DataConfig fields among the command's keyword arguments, and the TrainingConfig of its --recipe
    with the training options it was given."""

    def take(cls) -> dict:
        return {f: kw[f] for f in cls.__dataclass_fields__ if f in kw}

    return take(DataConfig), training_recipe(kw.get("recipe", "fast"), **take(TrainingConfig))


def _config(
    model: str, model_options: tuple[str, ...], causal: bool, features: str, params: Path | None = None, **kw
) -> FusionConfig:
    from vafusion.fusion.runs.config import FusionConfig, ModelConfig

    options = _model_option_values(model_options, causal, kw)
    data, training = _parts(kw)
    names = tuple(x.strip() for x in features.split(",") if x.strip())
    if params is not None:
        return _tuned(params, model, options, dict(data, features=names), dataclasses.asdict(training))
    return FusionConfig(DataConfig(features=names, **data), ModelConfig(model, options), training)


def _is_given(name: str) -> bool:
    """The user gave option ``name`` (command line or environment), as opposed to its default."""
    source = click.get_current_context().get_parameter_source(name)
    return source not in (None, ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP)


def _given(kw: dict) -> set[str]:
    """The settings a user fixed: data and training options given, and every model option set
    (--model-option, --causal, the deprecated per-model flags)."""
    from vafusion.fusion.models import parse_model_options

    fields = [*DataConfig.__dataclass_fields__, *TrainingConfig.__dataclass_fields__]
    given = {name for name in fields if name in kw and _is_given(name)}
    given |= set(parse_model_options(kw.get("model_options", ())))
    given |= {"causal"} if kw.get("causal") else set()
    for flag, (option, _) in _DEPRECATED_MODEL_FLAGS.items():
        if kw.get(flag.lstrip("-").replace("-", "_")) is not None:
            given.add(option)
    return given


def _tuned(path: Path, model: str, options: dict, data: dict, training: dict) -> FusionConfig:
    """--params: the tuned configuration, where the user gave no option of their own; the split (split,
    folds, fold) and the device always this command's."""
    from vafusion.fusion.experiments.tune import read_params
    from vafusion.fusion.models import resolve_model
    from vafusion.fusion.runs.config import FusionConfig, ModelConfig

    tuned = read_params(path)

    def merged(kept: dict[str, Any], here: dict[str, Any], always: tuple[str, ...]) -> dict[str, Any]:
        return {**kept, **{k: v for k, v in here.items() if k in always or _is_given(k)}}

    data = merged(dataclasses.asdict(tuned.data), data, ("split", "folds", "fold"))
    training = merged(dataclasses.asdict(tuned.training), training, ("device",))
    name = model if _is_given("model") else tuned.model.name
    same = resolve_model(name).ref == tuned.model.name
    options = {**(tuned.model.options if same else {}), **options}
    return FusionConfig(DataConfig(**data), ModelConfig(name, options), TrainingConfig(**training))


def _print_scores(title: str, scores: dict) -> None:
    click.echo(f"{title}: CCC_V {scores['ccc_v']:.4f}  CCC_A {scores['ccc_a']:.4f}  P {scores['p']:.4f}")
