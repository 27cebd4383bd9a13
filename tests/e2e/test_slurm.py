"""The SLURM profile on a real one-node SLURM cluster (`make test-slurm`; `make test` leaves it out).

The module fixture forms a cluster on 127.0.0.1 from Debian's packages (it runs
`apt-get install slurmctld slurmd slurm-client munge` when they are missing, so it needs root and a
package mirror): it writes /etc/slurm/slurm.conf and gres.conf (the executor's job step drops
SLURM_CONF, so the config has to sit there; files already there are put back afterwards), starts
munged, slurmctld and slurmd as its own child processes, and at the end cancels leftover jobs and
stops each daemon by PID, also on failure.

The node declares 16 GPUs (empty files in place of devices) and more CPUs and memory than the machine
has (SlurmdParameters=config_overrides, nothing is enforced without cgroups), so the profile's real
requests (`--gpus`, `--cpus-per-task`, `--mem`, `-t`, partitions) are submitted as they are and
scheduled. The command line changes only: no account (no accounting here; the plugin checks accounts
with sacctmgr), job status through squeue instead of sacct, a 1 s first status check, and one GPU for
train instead of the profile's 4 (several GPUs train as several processes, which round differently
from the local run's one, so the artifacts could not be compared byte for byte).

The tiny profile (two ablations, one training seed) runs through `snakemake --profile
workflow/profiles/slurm` and through the local profile in another temporary git repo, at the same
time; the artifacts must be byte-identical, and every job must have gone through sbatch onto the
partition, with the GPUs, the profile names.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from conftest import BIN, ROOT, TINY, deltalab, free_port, tree_hashes

# apt-get install, the cluster's start and a run of up to RUN_TIMEOUT come before the first test.
pytestmark = [pytest.mark.slurm, pytest.mark.timeout(1800)]

PROFILE = ROOT / "workflow" / "profiles" / "slurm" / "config.yaml"
GPU_RULES = ["generate", "judge", "train", "evaluate", "evaluate_base"]
CPU_RULES = ["prompts", "micro_models", "generator_metrics", "pairs", "report"]
ABLATIONS = ["delta", "top"]  # two pairs jobs, so the pairs group has two members
PACKAGES = ["slurmctld", "slurmd", "slurm-client", "munge"]
SLURM_CONF = Path("/etc/slurm/slurm.conf")
GRES_CONF = Path("/etc/slurm/gres.conf")
GPUS = 16  # on the node: every GPU job of the run can start at once
RUN_TIMEOUT = 420  # seconds; snakemake waits forever on a status it cannot read, so it is killed


def slurm_params() -> str:
    """The tiny profile with two ablations and one training seed: every rule runs, in less time."""
    keep = []
    for line in TINY.read_text().splitlines(keepends=True):
        name = re.match(r"  (\w+): \{chosen", line)
        if name and name[1] not in ABLATIONS:
            continue
        keep.append(line.replace("seeds: [0, 1]", "seeds: [0]"))
    text = "".join(keep)
    assert "seeds: [0]" in text
    return text


def profile() -> dict:
    return yaml.safe_load(PROFILE.read_text())


def partitions() -> tuple[str, str]:
    """The CPU and GPU partitions the profile names (the local cluster gets both)."""
    prof = profile()
    cpu = prof["default-resources"]["slurm_partition"]
    gpu = {prof["set-resources"][rule]["slurm_partition"] for rule in GPU_RULES}
    assert len(gpu) == 1 and cpu not in gpu, "the profile names one GPU partition besides the CPU one"
    return cpu, gpu.pop()


def slurm_conf(tmp: Path, cpu: str, gpu: str) -> str:
    return f"""\
ClusterName=deltalabtest
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation={tmp}/state
SlurmdSpoolDir={tmp}/spool
SlurmctldPidFile={tmp}/slurmctld.pid
SlurmdPidFile={tmp}/slurmd.pid
SlurmctldLogFile={tmp}/slurmctld.log
SlurmdLogFile={tmp}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
SlurmdParameters=config_overrides
GresTypes=gpu
MinJobAge=3600
ReturnToService=2
NodeName=localhost NodeAddr=127.0.0.1 CPUs=64 RealMemory=2000000 Gres=gpu:{GPUS} State=UNKNOWN
PartitionName={cpu} Nodes=localhost Default=YES MaxTime=INFINITE State=UP
PartitionName={gpu} Nodes=localhost MaxTime=INFINITE State=UP
"""


def ensure_packages() -> None:
    if all(shutil.which(tool) for tool in ("slurmctld", "slurmd", "sbatch", "munged")):
        return
    env = os.environ | {"DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", *PACKAGES],
                   check=True, capture_output=True, env=env)


def munge_running() -> bool:
    return subprocess.run(["munge", "-n"], capture_output=True).returncode == 0


def start_munged(tmp: Path) -> subprocess.Popen | None:
    """Our own munged, unless one already answers (that one is not ours to stop)."""
    if munge_running():
        return None
    key = Path("/etc/munge/munge.key")
    if not key.exists():
        key.parent.mkdir(parents=True, exist_ok=True)
        key.write_bytes(os.urandom(1024))
        shutil.chown(key, "munge", "munge")
        key.chmod(0o400)
    for folder in (Path("/run/munge"), Path("/var/log/munge"), Path("/var/lib/munge")):
        folder.mkdir(parents=True, exist_ok=True)
        shutil.chown(folder, "munge", "munge")
    proc = subprocess.Popen(["munged", "--foreground"], user="munge", group="munge",
                            stdout=open(tmp / "munged.log", "w"), stderr=subprocess.STDOUT)
    wait_for(munge_running, 20, "munged", tmp / "munged.log")
    return proc


def wait_for(check, seconds: float, what: str, log: Path) -> None:
    deadline = time.time() + seconds
    while not check():
        if time.time() > deadline:
            raise AssertionError(f"{what} did not come up:\n{log.read_text()[-3000:] if log.exists() else ''}")
        time.sleep(0.5)


def node_idle() -> bool:
    out = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], capture_output=True, text=True).stdout.split()
    return bool(out) and all(state == "idle" for state in out)


def cancel_jobs() -> None:
    """Cancel whatever still runs on this private cluster and wait (briefly) for it to end."""
    def running() -> list[str]:
        try:
            return subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True, timeout=20).stdout.split()
        except (OSError, subprocess.TimeoutExpired):
            return []

    if running():
        subprocess.run(["scancel", *running()], capture_output=True)
        deadline = time.time() + 30
        while running() and time.time() < deadline:
            time.sleep(1)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A one-node SLURM cluster on 127.0.0.1 with the profile's CPU and GPU partitions."""
    ensure_packages()
    tmp = tmp_path_factory.mktemp("slurm")
    (tmp / "state").mkdir()
    (tmp / "spool").mkdir()
    cpu, gpu = partitions()
    saved = {path: path.read_bytes() if path.exists() else None for path in (SLURM_CONF, GRES_CONF)}
    daemons: list[subprocess.Popen] = []
    try:
        SLURM_CONF.parent.mkdir(parents=True, exist_ok=True)
        SLURM_CONF.write_text(slurm_conf(tmp, cpu, gpu))
        # GPUs as empty files: slurmd counts the files; no cgroups, so no device is ever opened.
        for i in range(GPUS):
            (tmp / f"gpu{i}").touch()
        GRES_CONF.write_text(f"NodeName=localhost Name=gpu File={tmp}/gpu[0-{GPUS - 1}]\n")
        munged = start_munged(tmp)
        if munged:
            daemons.append(munged)
        daemons.append(subprocess.Popen(["slurmctld", "-D", "-i"], stdout=open(tmp / "slurmctld.out", "w"),
                                        stderr=subprocess.STDOUT))
        daemons.append(subprocess.Popen(["slurmd", "-D", "-N", "localhost"], stdout=open(tmp / "slurmd.out", "w"),
                                        stderr=subprocess.STDOUT))
        wait_for(node_idle, 60, "the SLURM node", tmp / "slurmctld.log")
        yield {"cpu": cpu, "gpu": gpu, "dir": tmp}
    finally:
        cancel_jobs()  # a killed snakemake leaves its jobs running, and slurmd's end does not stop them
        for proc in reversed(daemons):
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for path, content in saved.items():
            if content is None:
                path.unlink(missing_ok=True)
            else:
                path.write_bytes(content)


def make_repo(dst: Path) -> Path:
    """The workflow in a fresh git repo, as tests/e2e/test_orchestration.py sets it up."""
    dst.mkdir()
    for name in ("Snakefile", ".dvcignore", ".gitignore", "constraints.txt"):
        shutil.copy(ROOT / name, dst / name)
    shutil.copytree(ROOT / "workflow", dst / "workflow")
    shutil.copytree(ROOT / "src", dst / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    (dst / "data").mkdir()
    shutil.copy(ROOT / "data" / ".gitignore", dst / "data" / ".gitignore")
    (dst / "params.yaml").write_text(slurm_params())
    deltalab("dvc-yaml", cwd=dst)
    for cmd in (["git", "init", "-q"], ["git", "config", "user.email", "t@example.com"],
                ["git", "config", "user.name", "t"], ["git", "add", "-A"], ["git", "commit", "-qm", "init"]):
        subprocess.run(cmd, cwd=dst, check=True, capture_output=True)
    return dst


def run_resources() -> dict[str, dict]:
    """The profile's set-resources, except one GPU for train: with more, training runs as several
    processes under accelerate launch, whose sums round differently from the one-process local run."""
    resources = {rule: dict(values) for rule, values in profile()["set-resources"].items()}
    resources["train"]["gpu"] = 1
    return resources


def slurm_command() -> list[str]:
    """`snakemake --profile workflow/profiles/slurm` plus what a cluster without accounting needs.
    A key given on the command line replaces the profile's whole entry, so `--default-resources`
    repeats the profile's minus the account (plugin 2.8.0 accepts `--slurm-no-account` but still
    checks a given account with sacctmgr), and `--set-resources` repeats it with train's one GPU."""
    defaults = {k: v for k, v in profile()["default-resources"].items() if k != "slurm_account"}
    per_rule = [f"{rule}:{k}={v}" for rule, values in run_resources().items() for k, v in values.items()]
    return ["timeout", "-s", "KILL", str(RUN_TIMEOUT), str(BIN / "snakemake"), "--profile", "workflow/profiles/slurm",
            "--default-resources", *(f"{k}={v}" for k, v in defaults.items()), "--set-resources", *per_rule,
            "--slurm-no-account", "--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks", "1"]


@pytest.fixture(scope="module")
def runs(cluster, tmp_path_factory):
    """The same params through SLURM and through the local profile, side by side."""
    slurm_repo = make_repo(tmp_path_factory.mktemp("slurm_run") / "repo")
    local_repo = make_repo(tmp_path_factory.mktemp("local_run") / "repo")
    start = time.time()
    with open(slurm_repo.parent / "snakemake.log", "w") as log:
        on_slurm = subprocess.Popen(slurm_command(), cwd=slurm_repo, stdout=log, stderr=subprocess.STDOUT)
        local = subprocess.run([str(BIN / "snakemake"), "--profile", "workflow/profiles/local"], cwd=local_repo,
                               capture_output=True, text=True)
        on_slurm.wait()
    output = (slurm_repo.parent / "snakemake.log").read_text()
    assert local.returncode == 0, local.stderr[-3000:]
    assert on_slurm.returncode == 0, f"snakemake on SLURM failed ({on_slurm.returncode}):\n{output[-5000:]}"
    print(f"SLURM and local runs: {time.time() - start:.0f} s")
    return {"slurm": slurm_repo, "local": local_repo, "output": output}


def slurm_jobs() -> dict[str, dict]:
    """Every job the cluster knows (MinJobAge keeps finished ones for an hour): id -> fields."""
    fields = ["JobID", "Partition", "State", "Comment", "tres-per-job", "NumCPUs"]
    out = subprocess.run(["squeue", "-h", "-t", "all", "-O", ",".join(f"{f}:|" for f in fields)],
                         capture_output=True, text=True, check=True).stdout
    jobs = {}
    for line in out.splitlines():
        values = [v.strip() for v in line.split("|")[: len(fields)]]
        jobs[values[0]] = dict(zip(fields, values))
    return jobs


def submissions(runs) -> dict[str, str]:
    """SLURM job id -> the rule (or `group_<name>`) it ran, from snakemake's submission lines; the
    plugin files each job's log under .snakemake/slurm_logs/rule_<rule>/ or group_<group>/."""
    found = re.findall(r"has been submitted with SLURM jobid (\d+) \(log: (\S+)\)", runs["output"])
    logs = runs["slurm"] / ".snakemake" / "slurm_logs"
    return {jobid: Path(log).relative_to(logs).parts[0].removeprefix("rule_") for jobid, log in found}


def test_every_job_went_through_sbatch(runs):
    jobs = submissions(runs)
    known = slurm_jobs()
    rules = sorted(jobs.values())
    assert rules == sorted(["prompts", *["micro_models"] * 3, *["generate"] * 2, "generator_metrics", "judge",
                            "group_pairs_pairs", *["train"] * 2, "evaluate_base", *["evaluate"] * 2, "report"])
    for jobid, rule in jobs.items():
        assert known[jobid]["State"] == "COMPLETED", known[jobid]
        log = next((runs["slurm"] / ".snakemake" / "slurm_logs").rglob(f"{jobid}.log"))
        assert "Finished jobid" in log.read_text(), log
    # Both pairs jobs ran inside the one group job.
    group_id = next(jobid for jobid, rule in jobs.items() if rule.startswith("group_"))
    group_log = next((runs["slurm"] / ".snakemake" / "slurm_logs").rglob(f"{group_id}.log")).read_text()
    assert set(re.findall(r"wildcards: ablation=(\w+)", group_log)) == set(ABLATIONS)


PARAMS_GPU_RULES = {"generate", "judge"}  # their GPUs come from the params (serve.tp), not the profile


def test_gpu_rules_got_gpus_on_the_gpu_partition(runs, cluster):
    threads = profile()["set-threads"]
    known = slurm_jobs()
    for jobid, rule in submissions(runs).items():
        job = known[jobid]
        if rule in GPU_RULES:
            # the job's own log shows the resources snakemake resolved for it (gpu may be an expression)
            log = next((runs["slurm"] / ".snakemake" / "slurm_logs").rglob(f"{jobid}.log")).read_text()
            found = re.search(r"resources: .*\bgpu=(\d+)", log)
            gpus = int(found[1]) if found else 0
            if rule in PARAMS_GPU_RULES:  # from the params: the micro-world generates on CPU
                assert gpus == 0 and "gpu" not in job["tres-per-job"], job
            else:
                assert gpus >= 1 and job["tres-per-job"] == f"gres:gpu:{gpus}", job
            assert job["Partition"] == cluster["gpu"], job
            assert int(job["NumCPUs"]) == threads[rule], job
        else:
            assert rule in CPU_RULES or rule == "group_pairs_pairs", rule
            assert job["Partition"] == cluster["cpu"], job
            assert "gpu" not in job["tres-per-job"], job


def test_slurm_and_local_runs_write_identical_artifacts(runs):
    a = tree_hashes(runs["slurm"], "data", "metrics", "reports")
    b = tree_hashes(runs["local"], "data", "metrics", "reports")
    assert len(a) > 10 and a == b
    for name in ABLATIONS:
        assert f"data/checkpoints/{name}/seed0/model.safetensors" in a
        assert f"metrics/eval/{name}.json" in a
    assert {"reports/summary.md", "metrics/report.json", "metrics/eval/base.json"} <= set(a)
