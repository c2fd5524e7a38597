"""The main job as a function: train a VAE, evaluate it, write metrics and pictures.

`vi-jax train` and `vi-jax evaluate` are thin wrappers over `train` and `evaluate`
here; notebooks and benchmarks call them directly.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from vi_jax import data as vdata
from vi_jax import plotting
from vi_jax._io import write_text_atomic
from vi_jax.estimators import registry
from vi_jax.estimators.bounds import elbo
from vi_jax.estimators.thermodynamic import tvo_schedule
from vi_jax.families import CONTINUOUS_FAMILIES
from vi_jax.inference.evaluate import Evaluation, evaluate_model
from vi_jax.models import (
    init_decoder_bias,
    make_binary_vae,
    make_mlp_vae,
    make_two_layer_vae,
    make_vae_loss,
    merge_params,
    split_params,
)
from vi_jax.models.loss import batch_data
from vi_jax.models.view import vae_view
from vi_jax.training import (
    TrainState,
    burda_schedule,
    fit,
    init_train_state,
    make_epoch_fn,
    make_train_step,
)
from vi_jax.training.distributed import data_mesh, is_main_process
from vi_jax.training.sharding import (
    check_batch_divisible,
    data_parallel_size,
    place_data,
    resident_rows,
    shard_rows,
)
from vi_jax.types import Estimator


def resolve_estimator(
    objective: str, estimator: str, alpha: float = 0.5, **options: Any
) -> Estimator:
    """The registered gradient estimator for an objective and an estimator name.

    Args:
      objective: a registered objective (`registry.objectives()`).
      estimator: a name registered for it (`registry.describe()` lists them).
      alpha: the Renyi order, bound where the estimator takes it.
      **options: further options (`num_groups`, `beta`, `betas`, ...), each bound only
        where the estimator takes it.

    Returns:
      `estimator(key, log_joint, q, num_samples) -> [batch]`.
    """
    return registry.get_estimator(objective, estimator).bind(alpha=alpha, **options)


def estimator_options(config: TrainConfig) -> dict[str, Any]:
    """The estimator options a configuration sets (bound where an estimator takes them)."""
    return {
        "alpha": config.alpha,
        "num_groups": config.num_groups,
        "beta": config.ciwae_beta,
        "betas": tvo_schedule(config.tvo_partitions),
        "temperature": config.temperature,
    }


# "burda": 3^i passes at learning_rate * 10^(-i/7), i = 0..7 (Burda et al. 2016).
LR_SCHEDULES = ("constant", "burda")
MODELS = ("mlp", "two-layer")
"""`mlp`: one stochastic layer. `two-layer`: Burda et al.'s two stochastic layers, z1 of
width 2 * latent_dim over `hidden`, z2 of width latent_dim over `hidden` halved
(`--latent 50 --hidden 200,200 --activation tanh` is the paper's 784-200-200-100-100-50)."""
LATENT_TYPES = ("gaussian", "bernoulli", "categorical")
DECODER_BIASES = ("zero", "mean")
"""The decoder's output bias at initialisation. `zero` (the default): Flax's. `mean`: the
logit of the mean training image (`vi_jax.models.init_decoder_bias`), as in Burda et
al.'s code; without it the two-layer VAE switches its latents off early (it is what
the IWAE-table cells use). On the default one-layer job `mean` measured 0.20 ± 0.11
nats higher, one seed: too little evidence to change the default (benchmarks/README.md,
issue 14)."""


@dataclasses.dataclass
class TrainConfig:
    """Everything a training run depends on (saved to `config.json`).

    Defaults train the PyTorch-example VAE (784-400-20, ReLU, batch 128, Adam 1e-3) on
    dynamically binarised MNIST for 10 epochs: a few minutes on a 2-core CPU.
    """

    dataset: str = "mnist"
    model: str = "mlp"
    epochs: int = 10
    batch_size: int = 128
    learning_rate: float = 1e-3
    adam_eps: float = 1e-8
    lr_schedule: str = "constant"
    latent_dim: int = 20
    hidden: tuple[int, ...] = (400,)
    activation: str = "relu"
    prior: str = "normal"
    posterior: str = "diag"
    flow_steps: int = 2
    flow_hidden: int = 64
    objective: str = "elbo"
    estimator: str = "pathwise"
    num_samples: int = 1
    alpha: float = 0.5
    num_groups: int = 1
    ciwae_beta: float = 0.5
    tvo_partitions: int = 5
    sleep_weight: float = 0.0
    kl_warmup_steps: int = 0
    binarize: str = "dynamic"
    seed: int = 0
    eval_samples: int = 5000
    eval_examples: int = 1000
    eval_every: int = 1
    train_examples: int = 0
    checkpoint_every: int = 1
    latent_type: str = "gaussian"
    num_classes: int = 2
    temperature: float = 1.0
    decoder_bias: str = "zero"

    def validate(self) -> TrainConfig:
        """Raises ValueError naming the first invalid field."""
        if self.dataset not in ("mnist", "digits", "synthetic"):
            raise ValueError(f"`dataset` must be mnist, digits or synthetic, got {self.dataset!r}.")
        if self.model not in MODELS:
            raise ValueError(f"`model` must be one of {list(MODELS)}, got {self.model!r}.")
        if self.binarize not in ("dynamic", "static"):
            raise ValueError(f"`binarize` must be 'dynamic' or 'static', got {self.binarize!r}.")
        for name in (
            "epochs",
            "batch_size",
            "latent_dim",
            "num_samples",
            "num_groups",
            "tvo_partitions",
            "eval_samples",
            "eval_every",
            "checkpoint_every",
            "flow_steps",
            "flow_hidden",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be an integer >= 1, got {value!r}.")
        for name in ("kl_warmup_steps", "eval_examples", "train_examples"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"`{name}` must be an integer >= 0, got {value!r}.")
        if not (self.learning_rate > 0 and np.isfinite(self.learning_rate)):
            raise ValueError(f"`learning_rate` must be > 0, got {self.learning_rate}.")
        if not (self.adam_eps > 0 and np.isfinite(self.adam_eps)):
            raise ValueError(f"`adam_eps` must be > 0, got {self.adam_eps}.")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(
                f"`lr_schedule` must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}."
            )
        if self.posterior not in CONTINUOUS_FAMILIES:
            raise ValueError(
                f"`posterior` must be one of {list(CONTINUOUS_FAMILIES)}, got {self.posterior!r}."
            )
        spec = registry.get_estimator(self.objective, self.estimator)
        spec.check_num_samples(self.num_samples)
        if self.latent_type not in LATENT_TYPES:
            raise ValueError(
                f"`latent_type` must be one of {list(LATENT_TYPES)}, got {self.latent_type!r}."
            )
        if self.latent_type != "gaussian" and not spec.discrete_ok:
            ok = [s.key for s in registry.estimators() if s.discrete_ok]
            raise ValueError(
                f"`estimator` {spec.key} needs a reparameterised q, but `latent_type` is "
                f"{self.latent_type!r}; choose one of {ok}."
            )
        if self.latent_type == "categorical" and (
            not isinstance(self.num_classes, int) or self.num_classes < 2
        ):
            raise ValueError(f"`num_classes` must be an integer >= 2, got {self.num_classes!r}.")
        if self.decoder_bias not in DECODER_BIASES:
            raise ValueError(
                f"`decoder_bias` must be one of {list(DECODER_BIASES)}, got {self.decoder_bias!r}."
            )
        if not (self.temperature > 0 and np.isfinite(self.temperature)):
            raise ValueError(f"`temperature` must be > 0, got {self.temperature}.")
        if not 0.0 <= self.ciwae_beta <= 1.0:
            raise ValueError(f"`ciwae_beta` must be in [0, 1], got {self.ciwae_beta}.")
        if not (self.sleep_weight >= 0 and np.isfinite(self.sleep_weight)):
            raise ValueError(f"`sleep_weight` must be >= 0, got {self.sleep_weight}.")
        if self.sleep_weight and self.objective != "rws":
            raise ValueError(
                f"`sleep_weight` applies to --objective rws only, got objective {self.objective!r}."
            )
        return self


# Fields that do not change what is trained (how long, how often it is checked or saved,
# how the final evaluation is done): a rerun may change them without a flag.
RESUMABLE_FIELDS = (
    "epochs",
    "eval_samples",
    "eval_examples",
    "eval_every",
    "checkpoint_every",
)
# Fields that change the parameters' shapes: the saved checkpoints cannot continue.
STRUCTURAL_FIELDS = ("dataset", "latent_dim", "hidden", "prior")
# Fields added after runs were saved: a saved config without one ran with this value.
_ADDED_FIELDS = {"decoder_bias": "zero"}
CONFIG_FILE = "config.json"
CONFIG_HISTORY_FILE = "config_history.jsonl"


class ConfigChangeError(ValueError):
    """A rerun asked for a configuration that differs from the run's saved one."""


def _config_dict(config: TrainConfig) -> dict[str, Any]:
    return json.loads(json.dumps(dataclasses.asdict(config)))  # tuples as lists


def _read_saved_config(path: Path) -> dict[str, Any]:
    try:
        saved = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} is not a readable config ({err}).") from None
    if not isinstance(saved, dict):
        raise ValueError(f"{path} is not a readable config (a JSON object expected).")
    return saved


def check_rerun(
    config: TrainConfig, out: Path, *, allow_config_change: bool = False
) -> dict[str, tuple[Any, Any]]:
    """Compares `config` with the configuration saved in the run directory `out`.

    Args:
      config: the requested configuration.
      out: the run directory (it may not exist yet).
      allow_config_change: continue a run under changed settings (structural ones,
        which change the parameters' shapes, are refused anyway).

    Returns:
      A dict field -> (saved, requested) of the differences (empty for a new run).

    Raises:
      ConfigChangeError: on a difference that changes the run without
        `allow_config_change`, or one that changes the parameters' shapes; the message
        lists the differing fields and how to proceed.
    """
    cfg_path = out / CONFIG_FILE
    if not cfg_path.exists():
        if (out / "checkpoints").is_dir() and any((out / "checkpoints").iterdir()):
            raise ConfigChangeError(
                f"`out` {out} has checkpoints but no {CONFIG_FILE}: cannot tell whether the "
                "requested configuration matches the run's. Use a new output directory."
            )
        return {}
    saved = {**_ADDED_FIELDS, **_read_saved_config(cfg_path)}
    requested = _config_dict(config)
    diff = {k: (saved.get(k), v) for k, v in requested.items() if k not in saved or saved[k] != v}
    changing = {k: d for k, d in diff.items() if k not in RESUMABLE_FIELDS}
    listed = ", ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in changing.items())
    structural = [k for k in changing if k in STRUCTURAL_FIELDS]
    if structural:
        raise ConfigChangeError(
            f"`out` {out} holds a run with a different configuration ({listed}); "
            f"{', '.join(structural)} change the model's parameters, so it cannot continue. "
            "Train into a new output directory (--out)."
        )
    if changing and not allow_config_change:
        raise ConfigChangeError(
            f"`out` {out} holds a run with a different configuration ({listed}). Train "
            "into a new output directory (--out), or pass --allow-config-change "
            "(`allow_config_change=True`) to continue this run under the new settings "
            f"(recorded in {CONFIG_HISTORY_FILE})."
        )
    return diff


def load_data(config: TrainConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Train and test images in [0, 1] `[N, D]` float32, with labels `[N]`."""
    if config.dataset == "mnist":
        train, test = vdata.load_mnist("train"), vdata.load_mnist("test")
        xtr, xte = (
            np.asarray(vdata.to_unit_interval(train.images)),
            np.asarray(vdata.to_unit_interval(test.images)),
        )
        ytr, yte = train.labels, test.labels
    elif config.dataset == "digits":
        ds = vdata.load_digits()
        x, y = np.asarray(ds.images, np.float32), np.asarray(ds.labels)
        cut = int(0.8 * len(x))
        xtr, xte, ytr, yte = x[:cut], x[cut:], y[:cut], y[cut:]
    else:
        x = np.asarray(vdata.synthetic_binary_images(config.seed, 1200, 8), np.float32)
        y = np.zeros(len(x), np.int32)
        xtr, xte, ytr, yte = x[:1000], x[1000:], y[:1000], y[1000:]
    if config.train_examples:
        xtr, ytr = xtr[: config.train_examples], ytr[: config.train_examples]
    return xtr, ytr, xte, yte


def _device_info(mesh: Any = None) -> dict[str, Any]:
    dev = jax.devices()[0]
    return {
        "process_count": jax.process_count(),
        "data_parallel_devices": data_parallel_size(mesh),
        "platform": dev.platform,
        "device": getattr(dev, "device_kind", str(dev)),
        "num_devices": jax.device_count(),
        "host": platform.node(),
        "cpu_count": os.cpu_count(),
        "jax": jax.__version__,
    }


def build(
    config: TrainConfig,
    data_dim: int,
    num_train: int | None = None,
    train_x: np.ndarray | None = None,
):
    """The VAE, its (graphdef, params, rest) split, the loss and the optimizer.

    `num_train` (training examples) is needed by the "burda" schedule, whose stages are
    counted in passes over the data; `train_x` (the training data in [0, 1],
    `[N, data_dim]`) by `decoder_bias="mean"`, whose output bias is its mean's logit.
    """
    if config.lr_schedule == "burda" and num_train is None:
        raise ValueError("The 'burda' schedule needs `num_train` (steps per epoch).")
    if config.decoder_bias == "mean" and train_x is None:
        raise ValueError("`decoder_bias` 'mean' needs the training data (`train_x`).")
    if config.latent_type != "gaussian":  # binary / grouped one-hot latents
        vae = make_binary_vae(
            data_dim,
            config.latent_dim,
            tuple(config.hidden),
            config.activation,
            rngs=config.seed,
            latent_type=config.latent_type,
            num_classes=config.num_classes,
        )
    elif config.model == "two-layer":
        vae = make_two_layer_vae(
            data_dim,
            (2 * config.latent_dim, config.latent_dim),
            (tuple(config.hidden), tuple(max(1, h // 2) for h in config.hidden)),
            config.activation,
            rngs=config.seed,
        )
    else:
        vae = make_mlp_vae(
            data_dim=data_dim,
            latent_dim=config.latent_dim,
            hidden=tuple(config.hidden),
            activation=config.activation,
            prior=config.prior,
            posterior=config.posterior,
            flow_steps=config.flow_steps,
            flow_hidden=config.flow_hidden,
            rngs=config.seed,
        )
    if config.decoder_bias == "mean":
        init_decoder_bias(vae, train_x)
    graphdef, params, rest = split_params(vae)
    estimator = registry.get_estimator(config.objective, config.estimator).bind(
        **estimator_options(config)
    )
    if config.estimator == "nvil" and config.latent_type != "gaussian":
        loss_fn = _nvil_loss(graphdef, rest, estimator, config.num_samples)
    else:
        loss_fn = make_vae_loss(
            graphdef,
            estimator,
            num_samples=config.num_samples,
            kl_warmup_steps=config.kl_warmup_steps or None,
            rest=rest,
            sleep_weight=config.sleep_weight,
            # Per-step kl/recon monitoring measured +45% epoch time on CPU (XLA does not
            # share the elementwise likelihood work); the test ELBO is tracked per epoch instead.
            monitor=False,
        )
    learning_rate: float | optax.Schedule = config.learning_rate
    if config.lr_schedule == "burda":
        assert num_train is not None  # refused above, before building anything
        steps = max(1, num_train // config.batch_size)
        learning_rate = burda_schedule(config.learning_rate, steps)
    optimizer = optax.adam(learning_rate, eps=config.adam_eps)
    return graphdef, params, rest, loss_fn, optimizer


def _nvil_loss(graphdef: Any, rest: Any, estimator: Estimator, num_samples: int):
    """NVIL's loss with the model's own input-dependent baseline network C(x).

    The running normalisation state of `vi_jax.estimators.nvil` is not threaded through
    the trainer (its step carries no estimator state), so the signal is f - C(x), unscaled.
    """

    def loss_fn(params: Any, batch: Any, key: jax.Array):
        x = batch_data(batch)
        vae = merge_params(graphdef, params, rest)
        value = estimator(
            key, vae.log_joint_fn(x), vae.posterior(x), num_samples, baseline=vae.baseline(x)
        )
        return -jnp.mean(value), {"bound": jnp.mean(jax.lax.stop_gradient(value))}

    loss_fn.takes_step = False
    return loss_fn


def _binarized_test(config: TrainConfig, xte: np.ndarray) -> np.ndarray:
    if config.dataset == "synthetic":
        return xte
    # One fixed binarisation of the test set, so every evaluation sees the same data.
    return np.asarray(vdata.static_binarize(xte, seed=10_000 + config.seed), np.float32)


def evaluate_params(
    key: jax.Array,
    config: TrainConfig,
    graphdef: Any,
    params: Any,
    rest: Any,
    x_test: np.ndarray,
    *,
    num_samples: int | None = None,
    num_examples: int | None = None,
    progress: bool = False,
    mesh: Any = None,
) -> Evaluation:
    """Importance-sampled test log-likelihood and ELBO terms of trained parameters."""
    num_samples = num_samples or config.eval_samples
    n = num_examples if num_examples is not None else config.eval_examples
    x = x_test[:n] if n else x_test
    return evaluate_model(
        key,
        params,
        vae_view(graphdef, rest),
        x,
        num_samples=num_samples,
        data_chunk=100 if num_samples > 100 else 500,
        progress=progress,
        mesh=mesh,
    )


def write_pictures(
    out: Path, key: jax.Array, graphdef: Any, params: Any, rest: Any, x_test: np.ndarray
) -> list[str]:
    """Prior samples, reconstructions and latent interpolations as PNGs in `out`."""
    vae = merge_params(graphdef, params, rest)
    side = int(round(np.sqrt(x_test.shape[1])))
    shape = (side, side) if side * side == x_test.shape[1] else None
    k1, k2 = jax.random.split(key)
    written = []
    samples = np.asarray(vae.sample(k1, 100))
    plotting.save_image_grid(
        out / "samples.png", samples, 10, "Samples from the prior: E[x | z], z ~ p(z)", shape
    )
    written.append("samples.png")
    inputs = x_test[:30]
    recon = np.asarray(vae.decode(vae.posterior(jnp.asarray(inputs)).mean()).mean())
    plotting.save_reconstructions(out / "reconstructions.png", inputs, recon)
    written.append("reconstructions.png")
    # Interpolate between posterior means of pairs of test digits, decoded to means.
    pairs = [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)]
    t = jnp.linspace(0.0, 1.0, 10)[:, None]
    rows = []
    for a, b in pairs:
        za, zb = (vae.posterior(jnp.asarray(x_test[i : i + 1])).mean()[0] for i in (a, b))
        rows.append(np.asarray(vae.decode((1 - t) * za + t * zb).mean()))
    plotting.save_image_grid(
        out / "interpolation.png",
        np.concatenate(rows),
        10,
        "Latent interpolation between test digits (left to right)",
        shape,
    )
    written.append("interpolation.png")
    del k2
    return written


def train(
    config: TrainConfig,
    out: str | os.PathLike,
    *,
    progress: bool = True,
    allow_config_change: bool = False,
    devices: int | str | None = 1,
) -> dict[str, Any]:
    """Trains, evaluates and writes `metrics.json`, `metrics.jsonl`, PNGs and checkpoints.

    Args:
      config: the run's configuration (validated here).
      out: output directory; a run there is resumed from its newest intact checkpoint,
        provided `config` matches the run's `config.json` (see `check_rerun`).
      progress: show progress bars.
      allow_config_change: continue a run in `out` under changed (non-structural)
        settings; the change is appended to `out/config_history.jsonl`.
      devices: devices per process for data parallelism (an int or "all"); the batch
        axis is sharded over them. In a multi-host run (`distributed.initialize` called
        first) the mesh spans every process, each process keeps only its rows of the
        training set on its devices, and process 0 alone writes metrics and pictures;
        checkpoints are written by all processes together.

    Returns:
      The metrics dictionary also written to `out/metrics.json`.

    Raises:
      ConfigChangeError: `out` holds a run with a different configuration.
      ValueError: `out` is a file, or an invalid `config` field (named).
    """
    config.validate()
    mesh = data_mesh(devices)
    check_batch_divisible(config.batch_size, mesh, hint=" Choose --batch-size or --devices.")
    main_process = is_main_process()
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"`out` {out} is an existing file, not a run directory.")
    diff = check_rerun(config, out, allow_config_change=allow_config_change)
    t0 = time.perf_counter()
    xtr, _, xte, _ = load_data(config)
    x_test = _binarized_test(config, xte)
    if config.binarize == "static" and config.dataset != "synthetic":
        xtr = np.asarray(vdata.static_binarize(xtr, seed=config.seed), np.float32)
    # The run is known valid (configuration checked, data loaded): only now is it written.
    out.mkdir(parents=True, exist_ok=True)
    if main_process:
        if diff:
            record = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "changed": diff}
            with open(out / CONFIG_HISTORY_FILE, "a") as f:
                f.write(json.dumps(record) + "\n")
                f.flush()
                os.fsync(f.fileno())
        write_text_atomic(out / CONFIG_FILE, json.dumps(dataclasses.asdict(config), indent=2))
    graphdef, params, rest, loss_fn, optimizer = build(config, xtr.shape[1], len(xtr), xtr)
    step = make_train_step(loss_fn, optimizer)
    preprocess = None
    if config.binarize == "dynamic" and config.dataset != "synthetic":
        preprocess = vdata.dynamic_binarize
    epoch_fn = make_epoch_fn(
        step,
        batch_size=config.batch_size,
        num_examples=len(xtr),
        preprocess=preprocess,
        mesh=mesh,
    )
    # Across processes each one keeps only its rows; within one process a replica per
    # device makes every batch gather local.
    train_data = shard_rows(xtr, mesh) if jax.process_count() > 1 else jnp.asarray(xtr)
    if mesh is not None:
        train_data = place_data(train_data, mesh)
        print(
            f"process {jax.process_index()}/{jax.process_count()}: "
            f"{resident_rows(train_data)} of {len(xtr)} training examples resident on its "
            f"{len(train_data.addressable_shards)} device(s)",
            flush=True,
        )
    state = init_train_state(params, optimizer)
    key = jax.random.key(config.seed)
    monitor = x_test[: min(len(x_test), 1000)]
    view_fn = vae_view(graphdef, rest)

    @jax.jit
    def monitor_fn(p: Any, k: jax.Array) -> jax.Array:
        view = view_fn(p, monitor)
        return jnp.mean(elbo(k, view.log_joint, view.posterior, 1))

    def eval_fn(state: TrainState, epoch: int) -> dict[str, float]:
        if epoch % config.eval_every:
            return {}
        return {"test_elbo": float(monitor_fn(state.params, jax.random.key(epoch)))}

    t_load = time.perf_counter() - t0
    result = fit(
        key,
        state,
        epoch_fn,
        train_data,
        num_epochs=config.epochs,
        run_dir=out,
        checkpoint_every=config.checkpoint_every,
        eval_fn=eval_fn,
        config=dataclasses.asdict(config),
        progress=progress,
    )
    t_train = time.perf_counter() - t0 - t_load
    history = result.history
    params = result.state.params
    t1 = time.perf_counter()
    evaluation = evaluate_params(
        jax.random.key(config.seed + 1),
        config,
        graphdef,
        params,
        rest,
        x_test,
        progress=progress,
        mesh=mesh,
    )
    t_eval = time.perf_counter() - t1
    metrics_info = _device_info(mesh)
    if not main_process:
        return {"test": evaluation.summary(), "machine": metrics_info}
    # Host copies (replicated arrays are readable on every process): the pictures run
    # on process 0 alone and must not launch computations on the other hosts' devices.
    params = jax.tree.map(np.asarray, params)
    pictures = write_pictures(out, jax.random.key(config.seed + 2), graphdef, params, rest, x_test)
    curves = {"train bound (per example)": [h["bound"] for h in history]}
    if any("test_elbo" in h for h in history):
        curves[f"test ELBO ({len(monitor)} examples)"] = [
            h.get("test_elbo", np.nan) for h in history
        ]
    plotting.save_curves(out / "training_curve.png", curves, title="Training: bound per example")
    pictures.append("training_curve.png")
    epoch_times = [h["time_s"] for h in history if "time_s" in h]
    metrics = {
        "test": evaluation.summary(),
        "eval_protocol": {
            "num_samples": config.eval_samples,
            "num_examples": int(evaluation.log_likelihood.shape[0]),
            "test_binarization": "static, seed 10000 + config.seed",
        },
        "train": {
            "epochs": config.epochs,
            "final_bound": history[-1]["bound"] if history else None,
            "epoch_time_s_median": float(np.median(epoch_times)) if epoch_times else None,
        },
        "wall_time_s": {
            "load": t_load,
            "train": t_train,
            "evaluate": t_eval,
            "total": time.perf_counter() - t0,
        },
        "config": dataclasses.asdict(config),
        "machine": metrics_info,
        "pictures": pictures,
    }
    write_text_atomic(out / "metrics.json", json.dumps(metrics, indent=2, default=float))
    return metrics


def load_run(run_dir: str | os.PathLike) -> tuple[TrainConfig, np.ndarray, Any, Any, Any, int]:
    """(config, binarised test images, graphdef, trained params, rest, epoch) of a run."""
    run_dir = Path(run_dir)
    cfg_path = run_dir / "config.json"
    if not cfg_path.is_file():
        raise FileNotFoundError(
            f"`run_dir` {str(run_dir)!r} has no config.json: not a training run."
        )
    raw = {**_ADDED_FIELDS, **_read_saved_config(cfg_path)}
    try:
        raw["hidden"] = tuple(raw["hidden"])
        config = TrainConfig(**raw).validate()
    except (KeyError, TypeError) as err:
        raise ValueError(f"{cfg_path} is not a TrainConfig: {err}") from None
    xtr, _, xte, _ = load_data(config)
    x_test = _binarized_test(config, xte)
    graphdef, params, rest, _, optimizer = build(config, x_test.shape[1], len(xtr), xtr)
    from vi_jax.training import restore_latest_intact

    ckpt = restore_latest_intact(run_dir / "checkpoints", init_train_state(params, optimizer))
    return config, x_test, graphdef, ckpt.state.params, rest, ckpt.epoch


GAP_FAMILIES = ("meanfield", "fullrank")
"""Gaussian q* families `gaps` takes by name whatever the encoder (see `gaps`)."""


def resolve_gap_family(config: TrainConfig, family: str | None, encoder_family: Any) -> Any:
    """The q* family `gaps` fits for a run trained with `config.posterior`.

    Args:
      config: the run's configuration.
      family: None (the encoder's own family), "meanfield", "fullrank", or the run's
        own posterior name (the same as None).
      encoder_family: the trained encoder's `vi_jax.families.Family` (None for a
        diagonal Gaussian encoder).

    Returns:
      "meanfield" or "fullrank" (a Gaussian q* started from q_enc's loc and marginal
      scales), or the encoder's Family for its own name (q* per data point in that
      family, warm-started from the encoder's q: its flow weights included).

    Raises:
      ValueError: `family` is none of those.
    """
    if family is not None and family not in (*GAP_FAMILIES, config.posterior):
        raise ValueError(
            f"`family` must be None (this run's encoder family, {config.posterior!r}), "
            f"{config.posterior!r} or one of {list(GAP_FAMILIES)}, got {family!r}."
        )
    name = config.posterior if family is None else family
    if name == "diag":
        return "meanfield"
    if name == config.posterior and encoder_family is not None:
        return encoder_family  # warm-started from the encoder's q, weights and all
    if name in GAP_FAMILIES:
        return name
    raise ValueError(f"`family` {name!r}: the run's encoder has no such family to fit q* in.")


def gaps(
    run_dir: str | os.PathLike,
    *,
    num_examples: int = 100,
    num_is_samples: int = 1000,
    svi_steps: int = 300,
    family: str | None = None,
    progress: bool = True,
) -> tuple[dict[str, Any], str]:
    """Approximation and amortisation gaps (Cremer et al. 2018) of a trained run.

    Args:
      run_dir: a directory written by `train`.
      num_examples: test examples (the first ones).
      num_is_samples: K for log p(x).
      svi_steps: optimisation steps of the per-example q*.
      family: the family of q*. None (default): the trained encoder's own family
        (`config.posterior`: the mean-field Gaussian for "diag"; for a flow, a
        per-datapoint flow warm-started from the encoder's weights), which is the
        Cremer et al. split. "meanfield" / "fullrank": a diagonal / full-covariance
        Gaussian q* whatever the encoder. The run's posterior name means None.
      progress: show a progress bar.

    Returns:
      `(summary, markdown_table)`; the summary (with "family", the name of q*'s
      family) is also written to `run_dir/gaps.json`.

    Raises:
      ValueError: `family` is not one of those.
    """
    from vi_jax.inference.gaps import gaps_table, inference_gaps

    if family is not None and family not in (*GAP_FAMILIES, *CONTINUOUS_FAMILIES):
        raise ValueError(
            f"`family` must be None, one of {list(GAP_FAMILIES)} or the run's posterior "
            f"(one of {list(CONTINUOUS_FAMILIES)}), got {family!r}."
        )
    run_dir = Path(run_dir)
    config, x_test, graphdef, params, rest, epoch = load_run(run_dir)
    encoder = merge_params(graphdef, params, rest).encoder
    q_family = resolve_gap_family(config, family, getattr(encoder, "family", None))
    name = q_family if isinstance(q_family, str) else config.posterior
    _, summary = inference_gaps(
        jax.random.key(config.seed + 3),
        params,
        vae_view(graphdef, rest),
        jnp.asarray(x_test[:num_examples]),
        num_is_samples=num_is_samples,
        svi_steps=svi_steps,
        family=q_family,
        progress=progress,
    )
    summary = {k: (float(v) if np.ndim(v) == 0 else v) for k, v in summary.items()}
    out = {"epoch": epoch, "family": name, "svi_steps": svi_steps, **summary}
    write_text_atomic(run_dir / "gaps.json", json.dumps(out, indent=2, default=float))
    return out, gaps_table(summary)


def evaluate(
    run_dir: str | os.PathLike,
    *,
    num_samples: int | None = None,
    num_examples: int | None = None,
    progress: bool = True,
    devices: int | str | None = 1,
    method: str = "is",
    ais_steps: int = 100,
    ais_chains: int = 16,
) -> dict[str, Any]:
    """Re-evaluates the latest checkpoint of a training run.

    Args:
      run_dir: a directory written by `train` (with `config.json` and `checkpoints/`).
      num_samples: importance samples K (default: the run's `eval_samples`).
      num_examples: test examples (0 = all; default: the run's `eval_examples`).
      progress: show a progress bar.
      devices: devices per process over which the test examples are sharded (an int or
        "all"); the result equals the one-device one up to float reduction order (for
        method "is"; AIS and BDMC run on one device per process, their examples split over
        the processes).
      method: "is" (importance sampling with q, K = num_samples), "ais" (annealed
        importance sampling from q) or "bdmc" (AIS bounds on data simulated from the
        model: `num_examples` of them, default 100).
      ais_steps: T for "ais" and "bdmc".
      ais_chains: C chains per example for "ais" and "bdmc".

    Returns:
      The test summary, also written (by process 0) to `run_dir/evaluation.json` (or
      `evaluation_ais.json` / `evaluation_bdmc.json`).
    """
    mesh = data_mesh(devices)
    run_dir = Path(run_dir)
    config, x_test, graphdef, params, rest, epoch = load_run(run_dir)
    if method != "is":
        return _evaluate_ais(
            run_dir,
            config,
            x_test,
            graphdef,
            params,
            rest,
            epoch,
            method,
            num_examples,
            ais_steps,
            ais_chains,
            progress,
        )
    evaluation = evaluate_params(
        jax.random.key(config.seed + 1),
        config,
        graphdef,
        params,
        rest,
        x_test,
        num_samples=num_samples,
        num_examples=num_examples,
        progress=progress,
        mesh=mesh,
    )
    summary = {
        "epoch": epoch,
        "test": evaluation.summary(),
        "eval_protocol": {
            "num_samples": num_samples or config.eval_samples,
            "num_examples": int(evaluation.log_likelihood.shape[0]),
        },
    }
    if is_main_process():
        np.save(run_dir / "evaluation_log_likelihood.npy", evaluation.log_likelihood)
        write_text_atomic(run_dir / "evaluation.json", json.dumps(summary, indent=2, default=float))
    return summary


def _evaluate_ais(
    run_dir,
    config,
    x_test,
    graphdef,
    params,
    rest,
    epoch,
    method,
    num_examples,
    steps,
    chains,
    progress,
) -> dict[str, Any]:
    """`evaluate` for method "ais" or "bdmc"."""
    from vi_jax.inference import ais as ais_lib

    if method not in ("ais", "bdmc"):
        raise ValueError(f"`method` must be 'is', 'ais' or 'bdmc', got {method!r}.")
    view = vae_view(graphdef, rest)
    key = jax.random.key(config.seed + 5)
    n = num_examples if num_examples is not None else config.eval_examples
    opts = dict(num_steps=steps, num_chains=chains, progress=progress)
    if method == "ais":
        x = jnp.asarray(x_test[:n] if n else x_test)
        r = ais_lib.evaluate_ais(key, params, view, x, **opts)
        ll = np.asarray(r.log_marginal, np.float64)
        test = {
            "log_likelihood": float(ll.mean()),
            "log_likelihood_stderr": float(ll.std(ddof=1) / np.sqrt(len(ll)))
            if len(ll) > 1
            else 0.0,
            "log_likelihood_mc_stderr": float(np.sqrt(np.sum(np.square(r.stderr))) / len(ll)),
            "acceptance_rate": float(np.mean(r.acceptance_rate)),
            "num_examples": len(ll),
        }
    else:
        vae = merge_params(graphdef, params, rest)
        simulate = ais_lib.require_simulate(vae)
        z, x = simulate(jax.random.fold_in(key, 1), n or 100)
        x = jnp.asarray(x, z.dtype)
        r = ais_lib.evaluate_bdmc(key, params, view, x, z, **opts)
        test = {
            "lower": float(np.mean(r.lower.log_marginal)),
            "upper": float(np.mean(r.upper.log_marginal)),
            "gap": float(np.mean(r.gap)),
            "gap_stderr": float(np.std(r.gap, ddof=1) / np.sqrt(len(r.gap)))
            if len(r.gap) > 1
            else 0.0,
            "num_examples": int(len(r.gap)),
        }
    summary = {
        "epoch": epoch,
        "method": method,
        "ais_steps": steps,
        "ais_chains": chains,
        "test": test,
    }
    # AIS / BDMC split their chunks over the processes and gather them (see
    # `vi_jax.inference.ais`): every process holds the result, process 0 writes it.
    if is_main_process():
        write_text_atomic(
            Path(run_dir) / f"evaluation_{method}.json", json.dumps(summary, indent=2)
        )
    return summary
