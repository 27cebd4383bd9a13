"""Snakemake and DVC describe the same DAG: run the tiny profile through each in a temporary git repo.

- after `snakemake`, `dvc commit -f` leaves `dvc status` clean;
- after `dvc repro`, `snakemake --touch` leaves `snakemake -n` with nothing to do;
- both produce byte-identical artifacts, through pairs, train, evaluate and report;
- editing one generator reruns only that generator's branch, in both;
- changing one ablation's selection (also through `dvc exp run -S`) reruns only that ablation's
  pairs, train and evaluate, plus the report;
- an edit to the answer-checking code (src/deltalab/verify.py) reruns generate, evaluate and what
  follows them, and nothing before them, in both (code deps come from the stage table's import graph);
- `dvc metrics show` lists every ablation's evaluation and `dvc plots show` renders.

Each repo runs its own copy of src/ (PYTHONPATH), so its code deps are `src/deltalab/...` inside it.
"""

from __future__ import annotations

import os
import re
import subprocess
from contextlib import contextmanager

import pytest

from conftest import BIN, TINY, tree_hashes

ABLATIONS = ["delta", "zero", "top", "rand"]  # tests/tiny/params.yaml without its KTO/SFT ablations


def e2e_params() -> str:
    """The tiny profile minus the KTO and SFT ablations (tests/test_train.py covers them): the same
    DAG shape at two fewer trainings and evaluations per orchestrator."""
    lines = TINY.read_text().splitlines(keepends=True)
    return "".join(line for line in lines if not line.startswith(("  delta_kto:", "  delta_sft:")))

# The setup runs the tiny study twice (170 s quiet; more beside another xdist worker).
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1200)]


def own_code(repo) -> dict[str, str]:
    """The environment that makes `repo`'s commands import deltalab from `repo/src`."""
    return os.environ | {"PYTHONPATH": str(repo / "src")}


def sh(repo, *args, check=True) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(BIN / args[0]), *args[1:]], cwd=repo, capture_output=True, text=True, env=own_code(repo))
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def dvc_stale(repo) -> set[str]:
    out = sh(repo, "dvc", "status").stdout
    return set(re.findall(r"^(\S+):$", out, re.M))


def snakemake_jobs(repo) -> dict[str, int]:
    out = sh(repo, "snakemake", "-n", "-c1").stdout
    if "Nothing to be done" in out:
        return {}
    table = out.split("Job stats:")[1].split("\n\n")[0]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M) if m[1] not in ("total", "all")}


@contextmanager
def edited(path, old: str, new: str):
    """`path` with `old` replaced by `new` for the duration of the block; afterwards its content and
    its mtime are as before (Snakemake compares mtimes)."""
    good, stat = path.read_text(), path.stat()
    assert old in good
    path.write_text(good.replace(old, new))
    try:
        yield
    finally:
        path.write_text(good)
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def edit_generator_seed(repo, name: str) -> None:
    params = repo / "params.yaml"
    text = params.read_text()
    params.write_text(text.replace(f"{{micro_model: {name},", f"{{micro_model: {name}, seed: 7,", 1))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from conftest import ROOT, TINY
    import shutil

    repos = {}
    for tool in ("snakemake", "dvc"):
        dst = tmp_path_factory.mktemp(tool) / "repo"
        dst.mkdir()
        for name in ("Snakefile", ".dvcignore", ".gitignore", "constraints.txt"):
            shutil.copy(ROOT / name, dst / name)
        shutil.copytree(ROOT / "workflow", dst / "workflow")
        shutil.copytree(ROOT / "src", dst / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        (dst / "data").mkdir()
        shutil.copy(ROOT / "data" / ".gitignore", dst / "data" / ".gitignore")
        (dst / "params.yaml").write_text(e2e_params())
        sh(dst, "deltalab", "dvc-yaml")  # dvc.yaml for these params, from the stage table
        for cmd in (["git", "init", "-q"], ["git", "config", "user.email", "t@example.com"],
                    ["git", "config", "user.name", "t"], [str(BIN / "dvc"), "init", "-q"],
                    ["git", "add", "-A"], ["git", "commit", "-qm", "init"]):
            subprocess.run(cmd, cwd=dst, check=True, capture_output=True, env=own_code(dst))
        if tool == "snakemake":
            sh(dst, "snakemake", "--profile", "workflow/profiles/local")
        else:
            sh(dst, "dvc", "repro")
        repos[tool] = dst
    return repos


def test_lint_passes(runs):
    assert sh(runs["snakemake"], "snakemake", "--lint").returncode == 0


def test_snakemake_run_is_clean_for_dvc(runs):
    repo = runs["snakemake"]
    sh(repo, "dvc", "commit", "-f")
    assert "Data and pipelines are up to date" in sh(repo, "dvc", "status").stdout


def test_dvc_run_is_clean_for_snakemake(runs):
    repo = runs["dvc"]
    sh(repo, "snakemake", "--touch", "-c1")
    assert snakemake_jobs(repo) == {}


def test_an_edit_to_answer_checking_reruns_generate_evaluate_and_what_follows(runs):
    """verify.py is a code dep of every stage that imports it, found by the stage table's import walk:
    generate and evaluate in both orchestrators; prompts and the micro models, which
    never import it, stay up to date. Snakemake also lists what their outputs feed; DVC reruns those
    only if the outputs change (content hashes)."""
    repo = runs["dvc"]
    sh(repo, "snakemake", "--touch", "-c1")
    assert dvc_stale(repo) == set() and snakemake_jobs(repo) == {}
    n = len(ABLATIONS)
    line = "from __future__ import annotations\n"
    with edited(repo / "src/deltalab/verify.py", line, line + "# An edit: any change of bytes counts.\n"):
        stale = dvc_stale(repo)
        assert {"generate@weak", "generate@strong", "evaluate_base", *(f"evaluate@{a}" for a in ABLATIONS)} <= stale
        assert not {s for s in stale if s == "prompts" or s.startswith("micro_models")}
        assert snakemake_jobs(repo) == {"generate": 2, "generator_metrics": 1, "judge": 1, "pairs": n, "train": n,
                                        "evaluate_base": 1, "evaluate": n, "report": 1}
    assert dvc_stale(repo) == set() and snakemake_jobs(repo) == {}


def test_both_orchestrators_write_identical_artifacts(runs):
    # DVC writes a .gitignore beside a cached output that git does not ignore yet (reports/index.html):
    # Snakemake's run has one only once `dvc commit` ran there
    a, b = ({k: v for k, v in tree_hashes(runs[tool], "data", "metrics", "reports").items() if not k.endswith(".gitignore")}
            for tool in ("snakemake", "dvc"))
    assert len(a) > 10 and a == b
    for name in ABLATIONS:
        assert f"data/checkpoints/{name}/seed0/model.safetensors" in a
        assert f"metrics/eval/{name}.json" in a
    assert {"reports/summary.md", "reports/index.html", "reports/gain_vs_generator_delta.png", "reports/accuracy_vs_fraction.png",
            "metrics/report.json", "metrics/eval/base.json"} <= set(a)


def test_editing_one_selection_reruns_only_its_branch_in_snakemake(runs):
    repo = runs["snakemake"]  # a snakemake run records each job's params (dvc's `--touch` runs do not)
    with edited(repo / "params.yaml", "fraction: 0.5, by: step_coherence", "fraction: 0.75, by: step_coherence"):
        assert snakemake_jobs(repo) == {"pairs": 1, "train": 1, "evaluate": 1, "report": 1}


def test_editing_one_generator_reruns_only_its_branch(runs):
    repo = runs["snakemake"]  # has snakemake metadata and, after the commit test, a dvc.lock
    sh(repo, "dvc", "commit", "-f")
    edit_generator_seed(repo, "weak")
    assert dvc_stale(repo) == {"generate@weak", "generator_metrics"}
    # weak's traces feed its metrics, the judge and every ablation that pairs it (all three here)
    # weak's traces feed its metrics, the judge and every ablation that pairs it (all of them here),
    # and so every student, its evaluation and the report; the base student's evaluation stays.
    n = len(ABLATIONS)
    assert snakemake_jobs(repo) == {"generate": 1, "generator_metrics": 1, "judge": 1, "pairs": n, "train": n,
                                    "evaluate": n, "report": 1}
    # Run DVC up to the pairs (training everything again is the same code path, and slow).
    ran = set(re.findall(r"Running stage '([^']+)'", sh(repo, "dvc", "repro", "generator_metrics",
                                                          *(f"pairs@{a}" for a in ABLATIONS)).stdout))
    assert ran == {"generate@weak", "generator_metrics", "judge", *(f"pairs@{a}" for a in ABLATIONS)}


def test_editing_one_selection_reruns_only_its_branch_in_dvc(runs):
    repo = runs["dvc"]
    with edited(repo / "params.yaml", "fraction: 0.5, by: step_coherence", "fraction: 0.75, by: step_coherence"):
        # params deps: the ablation's pairs and student, and the report (which reads every ablation)
        assert dvc_stale(repo) == {"pairs@top", "train@top", "report"}


def test_editing_the_prompt_template_reruns_what_renders_it(runs):
    """`prompt` is a params dependency of generate, pairs and both evaluations, in both orchestrators."""
    edit = ('default: {user: "{{ question }}"}', 'default: {user: "Q: {{ question }}"}')
    n = len(ABLATIONS)
    with edited(runs["dvc"] / "params.yaml", *edit):
        assert dvc_stale(runs["dvc"]) == {"generate@weak", "generate@strong", "evaluate_base",
                                          *(f"pairs@{a}" for a in ABLATIONS), *(f"evaluate@{a}" for a in ABLATIONS)}
    with edited(runs["snakemake"] / "params.yaml", *edit):  # Snakemake's params metadata lives here
        assert snakemake_jobs(runs["snakemake"]) == {"generate": 2, "generator_metrics": 1, "judge": 1, "pairs": n, "train": n,
                                        "evaluate_base": 1, "evaluate": n, "report": 1}


def test_dvc_exp_run_of_a_selection_reruns_only_its_branch(runs):
    repo = runs["dvc"]
    for cmd in (["git", "add", "-A"], ["git", "commit", "-qm", "tiny study"]):
        subprocess.run(cmd, cwd=repo, check=True, capture_output=True)
    out = sh(repo, "dvc", "exp", "run", "-S", "ablations.top.selection.fraction=0.75").stdout
    ran = set(re.findall(r"Running stage '([^']+)'", out))
    assert ran == {"pairs@top", "train@top", "evaluate@top", "report"}
    shown = sh(repo, "dvc", "metrics", "show").stdout
    for name in ("base", *ABLATIONS):
        assert f"metrics/eval/{name}.json" in shown
    exps = sh(repo, "dvc", "exp", "show", "--json").stdout
    assert "metrics/eval/top.json" in exps and "0.75" in exps


def test_dvc_plots_render(runs, tmp_path):
    repo = runs["dvc"]
    sh(repo, "dvc", "plots", "show", "-o", str(tmp_path / "plots"))
    html = (tmp_path / "plots" / "index.html").read_text()
    assert "gain_vs_generator_delta" in html and "metrics/train" in html


def test_bad_params_stop_snakemake_with_the_same_line(runs):
    repo = runs["snakemake"]  # (`dvc exp run -S` above rewrote the dvc repo's params.yaml layout)
    with edited(repo / "params.yaml", 'n: 2, max_new_tokens: 24, scale: "8 steps"', 'n: -1, max_new_tokens: 24, scale: "8 steps"'):
        proc = sh(repo, "snakemake", "-n", "-c1", check=False)
    assert proc.returncode != 0
    assert "error: params.yaml: generators.weak.n: Input should be greater than or equal to 1" in proc.stderr
    assert "Traceback" not in proc.stderr
