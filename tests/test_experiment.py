"""The main job end to end on a tiny synthetic configuration, and its refusals."""

import json

import numpy as np
import pytest

from vi_jax import cli, experiment
from vi_jax.estimators import gradients as G
from vi_jax.plotting import tile_images


def test_train_and_evaluate_write_metrics_and_pictures(tmp_path, capsys):
    out = tmp_path / "run"
    argv = [
        "train", "--dataset", "synthetic", "--epochs", "2", "--batch-size", "50",
        "--latent", "3", "--hidden", "16", "--eval-samples", "50", "--eval-examples", "40",
        "--objective", "iwae", "--estimator", "dreg", "-k", "4", "--out", str(out), "--no-progress",
        # The IWAE paper's optimiser: its schedule changes the optimiser state that
        # `evaluate` must restore below.
        "--lr-schedule", "burda", "--adam-eps", "1e-4", "--checkpoint-every", "2",
    ]  # fmt: skip
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert "test log-likelihood (IS, K=50, 40 examples)" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    test = metrics["test"]
    assert np.isfinite(test["log_likelihood"]) and test["log_likelihood"] < 0
    assert test["elbo"] <= test["log_likelihood"] + 4 * test["log_likelihood_stderr"] + 1.0
    for name in ("samples.png", "reconstructions.png", "interpolation.png", "training_curve.png"):
        assert (out / name).stat().st_size > 1000, name
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2
    # evaluate re-loads the checkpoint and gives the same protocol's figure
    assert cli.main(["evaluate", "--run", str(out), "--eval-samples", "50", "--no-progress"]) == 0
    again = json.loads((out / "evaluation.json").read_text())
    assert again["epoch"] == 2
    assert again["test"]["log_likelihood"] == pytest.approx(test["log_likelihood"], abs=1e-3)
    # and the inference gaps of the trained model
    gaps_argv = [
        "gaps",
        "--no-progress",
        "--run",
        str(out),
        "--examples",
        "8",
        "--is-samples",
        "50",
        "--svi-steps",
        "20",
    ]
    assert cli.main(gaps_argv) == 0
    gaps = json.loads((out / "gaps.json").read_text())
    assert np.isfinite(gaps["amortisation_gap"]) and gaps["num_examples"] == 8
    assert gaps["family"] == "meanfield"  # the diagonal encoder's own family
    assert "amortisation" in capsys.readouterr().out.lower()


def test_resolve_estimator_and_config_refusals(tmp_path):
    assert experiment.resolve_estimator("iwae", "dreg") is G.iwae_dreg
    assert experiment.resolve_estimator("elbo", "stl") is G.elbo_stl
    with pytest.raises(ValueError, match="estimator"):
        experiment.resolve_estimator("elbo", "dreg")
    with pytest.raises(ValueError, match="objective"):
        experiment.resolve_estimator("kl", "pathwise")
    with pytest.raises(ValueError, match="num_samples"):
        experiment.TrainConfig(objective="iwae", estimator="vimco", num_samples=1).validate()
    with pytest.raises(ValueError, match="epochs"):
        experiment.TrainConfig(epochs=0).validate()
    with pytest.raises(ValueError, match="learning_rate"):
        experiment.TrainConfig(learning_rate=-1.0).validate()
    with pytest.raises(ValueError, match="adam_eps"):
        experiment.TrainConfig(adam_eps=0.0).validate()
    with pytest.raises(ValueError, match="lr_schedule"):
        experiment.TrainConfig(lr_schedule="cosine").validate()
    with pytest.raises(ValueError, match="checkpoint_every"):
        experiment.TrainConfig(checkpoint_every=0).validate()
    with pytest.raises(ValueError, match="num_train"):
        experiment.build(experiment.TrainConfig(lr_schedule="burda"), 784)
    assert cli.main(["train", "--epochs", "0", "--out", str(tmp_path / "x"), "--no-progress"]) == 2
    assert cli.main(["evaluate", "--run", str(tmp_path / "missing")]) == 2


def test_gaps_family_follows_the_encoder():
    """q*'s family defaults to the trained encoder's; overrides are Gaussian or the same name."""
    from vi_jax.families import make_family

    iaf = make_family("iaf", 2, flow_steps=1, flow_hidden=4, context_dim=1)
    resolve = experiment.resolve_gap_family
    flow_run, diag_run = experiment.TrainConfig(posterior="iaf"), experiment.TrainConfig()
    assert resolve(flow_run, None, iaf) is iaf
    assert resolve(flow_run, "iaf", iaf) is iaf
    assert resolve(flow_run, "meanfield", iaf) == "meanfield"
    assert resolve(flow_run, "fullrank", iaf) == "fullrank"
    assert resolve(diag_run, None, None) == "meanfield"
    assert resolve(diag_run, "diag", None) == "meanfield"
    full = make_family("fullrank", 2)
    assert resolve(experiment.TrainConfig(posterior="fullrank"), None, full) is full
    for bad in ("spline", "diag", "flow", 3):
        with pytest.raises(ValueError, match="`family`"):
            resolve(flow_run, bad, iaf)
    with pytest.raises(ValueError, match="`family`"):
        experiment.gaps("no-such-run-is-read-first", family="x")


def test_tile_images_layout_and_refusals():
    canvas = tile_images(np.ones((5, 16)), num_cols=2, pad=1)
    assert canvas.shape == (3 * 5 + 1, 2 * 5 + 1)
    with pytest.raises(ValueError, match="images"):
        tile_images(np.ones((5, 15)), num_cols=2)
    with pytest.raises(ValueError, match="num_cols"):
        tile_images(np.ones((5, 16)), num_cols=0)


def test_every_registered_objective_takes_a_training_step():
    """One jitted step per objective of the registry (its first estimator), on a tiny VAE."""
    import jax

    from vi_jax.estimators import registry
    from vi_jax.training import init_train_state, make_train_step

    x = (np.random.default_rng(0).random((8, 6)) > 0.5).astype(np.float32)
    for objective in registry.objectives():
        spec = registry.estimators(objective)[0]
        config = experiment.TrainConfig(
            dataset="synthetic",
            latent_dim=2,
            hidden=(8,),
            objective=objective,
            estimator=spec.name,
            num_samples=max(2, spec.min_samples),
            num_groups=2,
            tvo_partitions=3,
            sleep_weight=0.5 if objective == "rws" else 0.0,
        ).validate()
        _, params, _, loss_fn, optimizer = experiment.build(config, 6, 8, x)
        step = jax.jit(make_train_step(loss_fn, optimizer))
        state, metrics = step(init_train_state(params, optimizer), x, jax.random.key(0))
        assert np.isfinite(float(metrics["loss"])), objective


def test_objective_option_refusals():
    with pytest.raises(ValueError, match="ciwae_beta"):
        experiment.TrainConfig(objective="ciwae", estimator="pathwise", ciwae_beta=2.0).validate()
    with pytest.raises(ValueError, match="sleep_weight"):
        experiment.TrainConfig(sleep_weight=1.0).validate()
    with pytest.raises(ValueError, match="num_samples"):
        experiment.TrainConfig(objective="rws", estimator="wake", num_samples=1).validate()
    with pytest.raises(ValueError, match="num_groups"):
        experiment.TrainConfig(num_groups=0).validate()


def test_discrete_latent_config_validation():
    from vi_jax.experiment import TrainConfig as _TC

    _TC(latent_type="bernoulli", estimator="disarm").validate()
    _TC(latent_type="categorical", estimator="gumbel_softmax", temperature=0.5).validate()
    with pytest.raises(ValueError, match="elbo/disarm"):
        _TC(latent_type="bernoulli", estimator="pathwise").validate()
    with pytest.raises(ValueError, match="`temperature`"):
        _TC(latent_type="bernoulli", estimator="gumbel_softmax", temperature=0.0).validate()
    with pytest.raises(ValueError, match="`latent_type`"):
        _TC(latent_type="poisson").validate()


def test_every_subcommand_shares_the_common_options():
    parser = cli._parser()
    for argv in (["train"], ["evaluate", "--run", "r"], ["gaps", "--run", "r"]):
        assert parser.parse_args([*argv, "--no-progress"]).no_progress is True
        assert parser.parse_args(argv).no_progress is False


def test_decoder_bias_flag_reaches_the_config_and_a_changed_value_is_refused(tmp_path, capsys):
    import dataclasses

    from vi_jax.models import merge_params

    parser = cli._parser()
    assert parser.parse_args(["train"]).decoder_bias == "zero"
    assert parser.parse_args(["train", "--decoder-bias", "mean"]).decoder_bias == "mean"
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "--decoder-bias", "median"])
    with pytest.raises(ValueError, match="`decoder_bias`"):
        experiment.TrainConfig(decoder_bias="median").validate()
    # A resumed run under another value is refused, through the CLI (before any data).
    out = tmp_path / "run"
    out.mkdir()
    zero = experiment.TrainConfig(dataset="synthetic", decoder_bias="zero")
    (out / "config.json").write_text(json.dumps(dataclasses.asdict(zero)))
    argv = ["train", "--dataset", "synthetic", "--out", str(out), "--no-progress"]
    assert cli.main([*argv, "--decoder-bias", "mean"]) == 2
    assert "decoder_bias: 'zero' -> 'mean'" in capsys.readouterr().err
    # A run saved before the field existed ran with a zero bias.
    legacy = {k: v for k, v in dataclasses.asdict(zero).items() if k != "decoder_bias"}
    (out / "config.json").write_text(json.dumps(legacy))
    assert experiment.check_rerun(zero, out) == {}
    mean = dataclasses.replace(zero, decoder_bias="mean")
    with pytest.raises(experiment.ConfigChangeError, match="decoder_bias"):
        experiment.check_rerun(mean, out)
    # build sets the bias from the training data, for both models.
    x = np.random.default_rng(1).random((20, 6)).astype(np.float32)
    with pytest.raises(ValueError, match="train_x"):
        experiment.build(dataclasses.replace(mean, latent_dim=2, hidden=(4,)), 6, 20)
    m = np.clip(x.mean(0), 1e-3, 1 - 1e-3)
    for model in ("mlp", "two-layer"):
        config = dataclasses.replace(mean, model=model, latent_dim=2, hidden=(4,))
        graphdef, params, rest, _, _ = experiment.build(config, 6, 20, x)
        decoder = merge_params(graphdef, params, rest).decoder
        decoder = getattr(decoder, "decoder", decoder)
        bias = np.asarray(decoder.net.layers[-1].bias.get_value())
        np.testing.assert_allclose(bias, np.log(m / (1 - m)), rtol=1e-5, atol=1e-5)
