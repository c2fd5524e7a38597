"""Command line: `vi-jax train`, `vi-jax evaluate` (also `python -m vi_jax ...`)."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import warnings
from collections.abc import Sequence

from vi_jax.estimators import registry
from vi_jax.experiment import (
    DECODER_BIASES,
    LATENT_TYPES,
    LR_SCHEDULES,
    MODELS,
    TrainConfig,
)
from vi_jax.families import CONTINUOUS_FAMILIES


def _widths(text: str) -> tuple[int, ...]:
    try:
        widths = tuple(int(w) for w in text.split(",") if w.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--hidden must be comma-separated integers, got {text!r}"
        ) from None
    if not widths or min(widths) < 1:
        raise argparse.ArgumentTypeError(f"--hidden must list positive widths, got {text!r}")
    return widths


def _devices(text: str) -> int | str:
    if text == "all":
        return text
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(
            f"--devices must be a positive integer or 'all', got {text!r}"
        )
    return n


def _parser() -> argparse.ArgumentParser:
    d = TrainConfig()
    p = argparse.ArgumentParser(prog="vi-jax", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    # Options every subcommand shares, declared once.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--no-progress", action="store_true", help="no progress bars")
    # Options of the subcommands that read a finished run.
    of_run = argparse.ArgumentParser(add_help=False, parents=[common])
    of_run.add_argument("--run", required=True, help="directory of a `vi-jax train` run")
    # Data parallelism and multi-host runs (train and evaluate).
    par = argparse.ArgumentParser(add_help=False)
    par.add_argument(
        "--devices",
        type=_devices,
        default=1,
        help="devices per process to shard the batch over: N or 'all' (default 1)",
    )
    par.add_argument("--coordinator", help="multi-host: HOST:PORT of process 0")
    par.add_argument("--num-processes", type=int, help="multi-host: number of processes P")
    par.add_argument("--process-id", type=int, help="multi-host: this process's rank in [0, P)")
    par.add_argument(
        "--cluster-auto",
        action="store_true",
        help="multi-host: let JAX detect the cluster (SLURM, Open MPI, TPU) instead",
    )
    par.add_argument(
        "--init-timeout", type=int, default=120, help="seconds to wait for all processes"
    )

    t = sub.add_parser(
        "train",
        parents=[common, par],
        help="train and evaluate a VAE; writes metrics.json and PNGs",
    )
    t.add_argument(
        "--out", default="runs/mnist", help="output directory (resumed if it has checkpoints)"
    )
    t.add_argument("--dataset", choices=["mnist", "digits", "synthetic"], default=d.dataset)
    t.add_argument(
        "--model",
        choices=list(MODELS),
        default=d.model,
        help="two-layer: z1 (2 x latent) and z2 (latent) stochastic layers (Burda et al. 2016)",
    )
    t.add_argument(
        "--decoder-bias",
        choices=list(DECODER_BIASES),
        default=d.decoder_bias,
        help="the decoder's output bias at initialisation: zero (default), or the logit "
        "of the mean training image (Burda et al.'s code; what the two-layer model needs)",
    )
    t.add_argument("--epochs", type=int, default=d.epochs)
    t.add_argument("--batch-size", type=int, default=d.batch_size)
    t.add_argument("--lr", type=float, default=d.learning_rate, dest="learning_rate")
    t.add_argument("--adam-eps", type=float, default=d.adam_eps, help="Adam's epsilon")
    t.add_argument(
        "--lr-schedule",
        choices=list(LR_SCHEDULES),
        default=d.lr_schedule,
        help="burda: 3^i epochs at lr * 10^(-i/7), i = 0..7 (3280 epochs in all)",
    )
    t.add_argument("--latent", type=int, default=d.latent_dim, dest="latent_dim")
    t.add_argument("--hidden", type=_widths, default=d.hidden, help="e.g. 400 or 200,200")
    t.add_argument("--activation", default=d.activation)
    t.add_argument("--prior", choices=["normal", "laplace", "mog"], default=d.prior)
    t.add_argument(
        "--posterior",
        choices=list(CONTINUOUS_FAMILIES),
        default=d.posterior,
        help="the encoder's variational family",
    )
    t.add_argument("--flow-steps", type=int, default=d.flow_steps, help="flow steps (flows)")
    t.add_argument(
        "--flow-hidden", type=int, default=d.flow_hidden, help="flow networks' hidden width"
    )
    t.add_argument("--objective", choices=list(registry.objectives()), default=d.objective)
    t.add_argument("--estimator", default=d.estimator, help=registry.describe())
    t.add_argument(
        "--latent-type",
        choices=list(LATENT_TYPES),
        default=d.latent_type,
        help="gaussian (default); bernoulli: --latent binary latents; categorical: --latent "
        "groups of --num-classes one-hots (needs an estimator that takes a discrete q)",
    )
    t.add_argument("--num-classes", type=int, default=d.num_classes)
    t.add_argument(
        "--temperature",
        type=float,
        default=d.temperature,
        help="relaxation temperature of gumbel_softmax / straight_through",
    )
    t.add_argument(
        "-k", "--num-samples", type=int, default=d.num_samples, help="samples per data point (K)"
    )
    t.add_argument("--alpha", type=float, default=d.alpha, help="Renyi order for --objective renyi")
    t.add_argument(
        "-m",
        "--num-groups",
        type=int,
        default=d.num_groups,
        help="M groups of K samples for --objective miwae|piwae",
    )
    t.add_argument(
        "--beta",
        type=float,
        default=d.ciwae_beta,
        dest="ciwae_beta",
        help="CIWAE mixture weight in [0, 1] (1 = ELBO, 0 = IWAE)",
    )
    t.add_argument(
        "--tvo-partitions",
        type=int,
        default=d.tvo_partitions,
        help="TVO partitions of [0, 1] (log-spaced from 0.01)",
    )
    t.add_argument(
        "--sleep-weight",
        type=float,
        default=d.sleep_weight,
        help="--objective rws: weight of the sleep-phi term (0 = wake only)",
    )
    t.add_argument("--kl-warmup-steps", type=int, default=d.kl_warmup_steps)
    t.add_argument("--binarize", choices=["dynamic", "static"], default=d.binarize)
    t.add_argument("--seed", type=int, default=d.seed)
    t.add_argument(
        "--eval-samples", type=int, default=d.eval_samples, help="K for the test log-likelihood"
    )
    t.add_argument(
        "--eval-examples",
        type=int,
        default=d.eval_examples,
        help="test examples to evaluate (0 = all)",
    )
    t.add_argument(
        "--eval-every", type=int, default=d.eval_every, help="epochs between test-ELBO checks"
    )
    t.add_argument(
        "--train-examples",
        type=int,
        default=d.train_examples,
        help="use only the first N (0 = all)",
    )
    t.add_argument(
        "--checkpoint-every", type=int, default=d.checkpoint_every, help="epochs between saves"
    )
    t.add_argument(
        "--allow-config-change",
        action="store_true",
        help="continue the run in --out under changed settings (recorded in "
        "config_history.jsonl) instead of refusing",
    )

    e = sub.add_parser(
        "evaluate", parents=[of_run, par], help="re-evaluate the latest checkpoint of a run"
    )
    e.add_argument("--eval-samples", type=int, default=None)
    e.add_argument("--eval-examples", type=int, default=None)
    e.add_argument(
        "--method",
        choices=["is", "ais", "bdmc"],
        default="is",
        help="is: importance sampling with q; ais: annealed IS; bdmc: AIS bounds on simulated data",
    )
    e.add_argument("--ais-steps", type=int, default=100, help="T for ais/bdmc")
    e.add_argument("--ais-chains", type=int, default=16, help="chains per example for ais/bdmc")
    g = sub.add_parser(
        "gaps", parents=[of_run], help="approximation and amortisation gaps of a trained run"
    )
    g.add_argument("--examples", type=int, default=100, help="first N test examples")
    g.add_argument("--is-samples", type=int, default=1000, help="K for log p(x)")
    g.add_argument("--svi-steps", type=int, default=300, help="steps to fit each q*")
    g.add_argument(
        "--family",
        choices=["meanfield", "fullrank", "diag", "lowrank", "iaf", "realnvp", "spline"],
        default=None,
        help="q*'s family (default: the run's encoder family; meanfield/fullrank: a Gaussian "
        "q* whatever the encoder; a family name must be the run's --posterior)",
    )
    return p


def _print_summary(metrics: dict) -> None:
    test = metrics["test"]
    proto = metrics.get("eval_protocol", {})
    print(
        f"test log-likelihood (IS, K={proto.get('num_samples')}, "
        f"{proto.get('num_examples')} examples): "
        f"{test['log_likelihood']:.2f} ± {test['log_likelihood_stderr']:.2f} nats  "
        f"(NLL {test['nll']:.2f})"
    )
    print(
        f"test ELBO {test['elbo']:.2f} = recon {test['recon']:.2f} - KL {test['kl']:.2f};  "
        f"active units {test['active_units']}"
    )


def _one_line(err: BaseException) -> str:
    return " ".join(part.strip() for part in str(err).splitlines() if part.strip())


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    # A warning for the user (e.g. a corrupt checkpoint set aside): one line, no source.
    print(f"vi-jax: warning: {_one_line(message)}", file=sys.stderr if file is None else file)


def _start_distributed(args: argparse.Namespace) -> None:
    """Joins a multi-host run when asked, before anything touches a device."""
    from vi_jax.training import distributed

    given = [getattr(args, k, None) for k in ("coordinator", "num_processes", "process_id")]
    if getattr(args, "cluster_auto", False):
        distributed.initialize(auto=True, timeout_s=args.init_timeout)
    elif any(v is not None for v in given):
        distributed.initialize(*given, timeout_s=args.init_timeout)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `vi-jax` command."""
    args = _parser().parse_args(argv)
    import jax

    from vi_jax import experiment
    from vi_jax.data.mnist import DataUnavailableError
    from vi_jax.training import NonFiniteLossError
    from vi_jax.training.distributed import DistributedInitError

    previous = warnings.showwarning
    warnings.showwarning = _show_warning
    try:
        _start_distributed(args)
        if args.command == "train":
            fields = {f.name for f in dataclasses.fields(TrainConfig)}
            config = TrainConfig(**{k: v for k, v in vars(args).items() if k in fields})
            metrics = experiment.train(
                config,
                args.out,
                progress=not args.no_progress,
                allow_config_change=args.allow_config_change,
                devices=args.devices,
            )
            if "pictures" not in metrics:  # not process 0 of a multi-host run
                return 0
            _print_summary(metrics)
            wall = metrics["wall_time_s"]
            print(
                f"{config.epochs} epochs, median "
                f"{metrics['train']['epoch_time_s_median']:.2f} s/epoch; wall time "
                f"{wall['total']:.0f} s (train {wall['train']:.0f} s, "
                f"evaluate {wall['evaluate']:.0f} s)"
            )
            print(f"wrote {args.out}/metrics.json and {', '.join(metrics['pictures'])}")
        elif args.command == "gaps":
            _, table = experiment.gaps(
                args.run,
                num_examples=args.examples,
                num_is_samples=args.is_samples,
                svi_steps=args.svi_steps,
                family=args.family,
                progress=not args.no_progress,
            )
            print(table)
            print(f"wrote {args.run}/gaps.json")
        else:
            summary = experiment.evaluate(
                args.run,
                num_samples=args.eval_samples,
                num_examples=args.eval_examples,
                progress=not args.no_progress,
                devices=args.devices,
                method=args.method,
                ais_steps=args.ais_steps,
                ais_chains=args.ais_chains,
            )
            if jax.process_index():
                return 0
            if args.method == "is":
                _print_summary(summary)
            else:
                print(f"{args.method} (T={args.ais_steps}, C={args.ais_chains}): {summary['test']}")
            suffix = "" if args.method == "is" else f"_{args.method}"
            print(f"wrote {args.run}/evaluation{suffix}.json")
    except NonFiniteLossError as err:
        print(f"vi-jax: training stopped: {err}", file=sys.stderr)
        return 3
    except (ValueError, TypeError, OSError, DataUnavailableError, DistributedInitError) as err:
        # User errors (bad arguments, files, data): one line naming them, no traceback.
        print(f"vi-jax: error: {_one_line(err)}", file=sys.stderr)
        return 2
    finally:
        warnings.showwarning = previous
    return 0


if __name__ == "__main__":
    sys.exit(main())
