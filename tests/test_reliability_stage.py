"""The reliability stage through the real `deltalab reliability` command, on a small synthetic study
(prompts, traces and first-judge judgments written here; pairs built by the real pairs stage)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml

from conftest import deltalab
from fake_openai import FakeJudge, Outcome
from deltalab import paths
from deltalab.config import DIMENSIONS, load_params
from deltalab.judge import JUDGMENT_SCHEMA
from deltalab.stages import pairs

PROMPTS = 30
GENERATORS = {"strong": 4, "weak": 2}  # generator -> its typical score


def params(second_judge: dict, cache: Path | None = None, judge: dict | None = None) -> dict:
    return {
        **({"judge": judge} if judge else {}),
        "tasks": {"chain_sum": {"source": "reasoning_gym", "dataset": "chain_sum"}},
        "prompts": {"train": {"chain_sum": PROMPTS}, "eval_id": {"chain_sum": 4}},
        "generators": {g: {"model": f"fake/{g}", "n": 2} for g in GENERATORS},
        "ablations": {
            "delta": {"chosen": "strong", "rejected": "weak"},
            "top": {"chosen": "strong", "rejected": "weak", "selection": {"method": "top_k", "fraction": 0.5}},
            "bottom_step": {"chosen": "strong", "rejected": "weak",
                            "selection": {"method": "bottom_k", "count": 5, "by": "step_coherence"}},
        },
        "reliability": {"second_judge": second_judge, "bootstrap": 200},
        **({"runtime": {"judge": {"cache_dir": str(cache)}}} if cache else {}),
    }


def layout(root: Path, second_judge: dict, cache: Path | None = None, judge: dict | None = None) -> Path:
    """Prompts, traces and verifier-style first judgments of two generators, then the real pairs stage."""
    root.mkdir(parents=True)
    (root / "params.yaml").write_text(yaml.safe_dump(params(second_judge, cache, judge)))
    rng = np.random.default_rng(0)
    ids = [f"p{i:02d}" for i in range(PROMPTS)]
    (root / "data/prompts").mkdir(parents=True)
    pl.DataFrame({"prompt_id": ids, "question": [f"{i} + {i % 7} =" for i in range(PROMPTS)],
                  "answer": [str(i + i % 7) for i in range(PROMPTS)], "metadata": ["{}"] * PROMPTS,
                  "family": ["chain_sum"] * PROMPTS}).write_parquet(root / "data/prompts/train.parquet")
    for d in ("traces", "judgments"):
        (root / "data" / d).mkdir(parents=True)
    for g, level in GENERATORS.items():
        rows = [(f"{g}{p}s{s}", p, s) for p in ids for s in range(2)]
        trace_ids = [r[0] for r in rows]
        pl.DataFrame({"trace_id": trace_ids, "prompt_id": [r[1] for r in rows],
                      "sample_index": pl.Series([r[2] for r in rows], dtype=pl.Int64),
                      "correct": rng.random(len(rows)) < level / 5,
                      "completion": [f"{g} says {i}\nA:{i}" for i in range(len(rows))]}
                     ).write_parquet(root / f"data/traces/{g}.parquet")
        status = ["parse_error" if i == 3 else "ok" for i in range(len(rows))]
        score = lambda: [None if s != "ok" else int(np.clip(level + rng.integers(-2, 3), 1, 5)) for s in status]
        table = {"trace_id": trace_ids, "prompt_id": [r[1] for r in rows], "generator": [g] * len(rows),
                 "judge": ["verifier"] * len(rows), "template_version": ["verifier-v1"] * len(rows),
                 "status": status, "reason": [None if s == "ok" else "bad" for s in status],
                 **{d: score() for d in DIMENSIONS}, "rationale": None, "raw_response": None, "cache_key": None,
                 "prompt_tokens": 0, "completion_tokens": 0, **{f"verifier_{d}": None for d in DIMENSIONS}}
        pl.DataFrame({k: v if isinstance(v, list) else [v] * len(rows) for k, v in table.items()},
                     schema=JUDGMENT_SCHEMA).write_parquet(root / f"data/judgments/{g}.parquet")
    p = load_params(root / "params.yaml")
    for name in ("delta", "top", "bottom_step"):  # the real pairs stage, in-process (unit tests use this too)
        pairs.run(name, p, root / paths.PROMPTS["train"], root / paths.TRACES_DIR, root / paths.JUDGMENTS_DIR,
                  root / paths.at(paths.PAIRS, name), root / paths.at(paths.KTO, name),
                  root / paths.at(paths.PAIRS_METRICS, name))
    return root


def outputs(root: Path) -> dict[str, bytes]:
    files = [root / "metrics/reliability.json", *sorted((root / "data/reliability/judgments").glob("*.parquet"))]
    return {str(f.relative_to(root)): f.read_bytes() for f in files}


@pytest.mark.integration
def test_noisy_second_judge_stage_writes_agreement_and_stability_and_reruns_identically(tmp_path):
    root = layout(tmp_path / "study", {"backend": "noisy", "noise": 0.7, "seed": 3})
    proc = deltalab("reliability", cwd=root)
    assert "reliability (noisy:sd=0.7,seed=3 vs verifier)" in proc.stdout + proc.stderr
    m = json.loads((root / "metrics/reliability.json").read_text())
    assert m["second_judge"]["backend"] == "noisy" and "Gaussian noise (SD 0.7" in m["second_judge"]["description"]
    # every first-judge ok trace is scored by the noisy judge (failed rows stay failed)
    assert m["traces"] == {"first_ok": 2 * 2 * PROMPTS - 2, "second_ok": 2 * 2 * PROMPTS - 2, "total": 2 * 2 * PROMPTS}
    agg = m["agreement"]["scores"]["aggregate"]
    assert agg["n"] == 2 * 2 * PROMPTS - 2
    for dim in (*DIMENSIONS, "aggregate"):
        block = m["agreement"]["scores"][dim]
        lo, hi = block["spearman_ci"]["ci"]
        assert 0 < lo <= block["spearman"] <= hi <= 1  # noise of SD 0.7 on scores 1-5: positive, imperfect
        lo, hi = block["exact_ci"]["ci"]
        assert 0 < lo <= block["exact"] <= hi < 1
        assert block["spearman_ci"]["draws"] == 200
    # only the ranked ablations, each with its Jaccard, CI, ties and tie-break rule
    assert sorted(m["selections"]) == ["bottom_step", "top"]
    top = m["selections"]["top"]
    assert top["available"] and top["candidates_unscored"] == 0
    written = pl.read_parquet(root / "data/pairs/top.parquet")
    assert top["selected_a"] == top["selected_b"] == written.height
    assert 0 <= top["jaccard_ci"]["ci"][0] <= top["jaccard"] <= top["jaccard_ci"]["ci"][1] <= 1
    assert top["ties_a"]["tied"] >= top["ties_a"]["kept"] >= 1
    assert "pair_id ascending" in top["tie_break"]
    assert m["selections"]["bottom_step"]["selected_a"] == 5
    # the second judge's judgments: one file per generator, integer scores
    noisy = pl.read_parquet(root / "data/reliability/judgments/strong.parquet")
    assert noisy.height == 2 * PROMPTS and noisy["factuality"].dtype == pl.Int8
    first = outputs(root)
    deltalab("reliability", cwd=root)
    assert outputs(root) == first


@pytest.mark.integration
def test_pairs_not_from_these_judgments_are_a_user_error(tmp_path):
    root = layout(tmp_path / "study", {"backend": "noisy", "noise": 0.5})
    pl.read_parquet(root / "data/pairs/top.parquet").head(3).write_parquet(root / "data/pairs/top.parquet")
    proc = deltalab("reliability", cwd=root, check=False)
    assert proc.returncode == 2
    assert "data/pairs/top.parquet: its pairs are not the selection" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.integration
def test_llm_second_judge_goes_through_the_cache(tmp_path):
    with FakeJudge() as fake:
        fake.plan = lambda bhash, content, parse_retry, attempt: Outcome("ok")
        second = {"backend": "openai", "base_url": fake.url, "model": "fake-judge", "timeout_s": 5.0}
        root = layout(tmp_path / "study", second, cache=tmp_path / "cache")
        deltalab("reliability", cwd=root)
        sent = fake.count
        assert sent == 2 * 2 * PROMPTS  # one request per trace
        first = outputs(root)
        proc = deltalab("reliability", cwd=root)
        assert fake.count == sent  # the rerun sent nothing
        assert "0 requests, 120 cache hits" in proc.stdout + proc.stderr
        assert outputs(root) == first
    m = json.loads((root / "metrics/reliability.json").read_text())
    assert m["second_judge"]["label"] == "openai:fake-judge"
    assert m["traces"]["second_ok"] == 2 * 2 * PROMPTS
    table = pl.read_parquet(root / "data/reliability/judgments/weak.parquet")
    assert set(table["judge"]) == {"openai:fake-judge"} and set(table["status"]) == {"ok"}
