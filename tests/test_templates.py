"""The SLURM templates of slurm/ and their renderer (scripts/render_slurm.py): render, `bash -n`, submit chain."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

import render_slurm  # noqa: E402

SAMPLES = {
    "backmap.sbatch": dict(INPUT="/scratch/run 1/big.h5", OUTPUT="/scratch/big.aa.h5", NODES="4",
                           TASKS_PER_NODE="4", CPUS_PER_TASK="16", GPUS_PER_NODE="4", PARTITION="gpu",
                           LDB_HPC="/opt/ldb/venv/bin/ldb-hpc", EXTRA_ARGS="--batch-frames 128 --samples 2"),
    "backmap-array.sbatch": dict(INPUT="big.h5", OUTPUT="big.aa.h5", SHARDS="16", LAST_SHARD="15",
                                 CPUS_PER_TASK="8", ACCOUNT="proj42"),
    "merge.sbatch": dict(OUTPUT="big.aa.h5", TIME="00:10:00"),
    "train.sbatch": dict(STAGE="diffusion", DATA="train.h5", OUT="runs/diff", INIT="runs/tok/model", NODES="2",
                         GPUS_PER_NODE="4", TASKS_PER_NODE="4", EXTRA_ARGS="--lr 1e-3"),
}
TEMPLATES = sorted(p.name for p in (REPO / "slurm").glob("*.sbatch"))


def _render(name: str, values: dict) -> str:
    return render_slurm.render((REPO / "slurm" / name).read_text(), values, name)


def _bash_n(script: str, tmp_path: Path) -> None:
    path = tmp_path / "job.sbatch"
    path.write_text(script)
    proc = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_every_template_has_sample_values():
    assert TEMPLATES == sorted(SAMPLES)


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_render_sample_values_passes_bash_n(name, tmp_path):
    script = _render(name, SAMPLES[name])
    _bash_n(script, tmp_path)
    assert not re.search(r"@[A-Z][A-Z0-9_]*@", script)
    assert "# @param" not in script
    assert script.startswith("#!/bin/bash\n")
    # #SBATCH directives must precede the first command, or sbatch ignores them.
    lines = script.splitlines()
    first_command = next(i for i, line in enumerate(lines[1:], 1) if line and not line.startswith("#"))
    assert all(i < first_command for i, line in enumerate(lines) if line.startswith("#SBATCH"))
    for key, value in SAMPLES[name].items():
        assert value in script, key


def test_backmap_job_uses_slurm_threads_gpus_and_srun(tmp_path):
    script = _render("backmap.sbatch", SAMPLES["backmap.sbatch"])
    assert "#SBATCH --nodes=4" in script and "#SBATCH --ntasks-per-node=4" in script
    assert "#SBATCH --cpus-per-task=16" in script and "#SBATCH --gpus-per-node=4" in script
    assert re.search(r'^threads=\$\{SLURM_CPUS_PER_TASK:-1\}$', script, re.M)
    assert re.search(r'srun .*\n\s+"/opt/ldb/venv/bin/ldb-hpc" backmap "/scratch/run 1/big.h5"', script)
    assert '--threads "$threads"' in script and "--batch-frames 128 --samples 2" in script


def _run_job(script: str, tmp_path: Path, **env) -> subprocess.CompletedProcess:
    """Run a rendered job script with the srun/scontrol stand-ins of :func:`_stub_bin` on PATH."""
    job = tmp_path / "job.sbatch"
    job.write_text(script)
    env = dict(os.environ, PATH=f"{_stub_bin(tmp_path)}:{os.environ['PATH']}", CALLS=str(tmp_path / "calls"), **env)
    return subprocess.run(["bash", str(job)], env=env, capture_output=True, text=True)


@pytest.mark.parametrize("gpus, device, expected", [
    ("4", None, "cuda"),  # GPUs requested: --device cuda, never a silent fall-back to the CPU
    ("", None, "auto"),  # CPU nodes: backmap's own default
    ("4", "cpu", "cpu"),
    ("2", "cuda:1", "cuda:1"),
])
def test_backmap_job_passes_the_device_to_srun(gpus, device, expected, tmp_path):
    values = dict(SAMPLES["backmap.sbatch"], GPUS_PER_NODE=gpus, LDB_HPC=str(tmp_path / "bin" / "ldb-hpc"))
    if device is not None:
        values["DEVICE"] = device
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "ldb-hpc").write_text("#!/bin/sh\nexit 0\n")  # the verify step after srun
    (tmp_path / "bin" / "ldb-hpc").chmod(0o755)
    script = _render("backmap.sbatch", values)
    _bash_n(script, tmp_path)
    proc = _run_job(script, tmp_path, SLURM_CPUS_PER_TASK="16")
    assert proc.returncode == 0, proc.stderr
    call = (tmp_path / "calls").read_text().strip()
    assert f"[--io][shards][--device][{expected}][--threads][16]" in call, call
    assert f"device {expected}" in proc.stdout
    assert ("#SBATCH --gpus-per-node=" in script) == bool(gpus)


@pytest.mark.parametrize("gpus, expected", [("1", "cuda"), ("", "auto")])
def test_array_job_passes_the_device_to_srun(gpus, expected, tmp_path):
    script = _render("backmap-array.sbatch", dict(SAMPLES["backmap-array.sbatch"], GPUS_PER_TASK=gpus))
    _bash_n(script, tmp_path)
    proc = _run_job(script, tmp_path, SLURM_ARRAY_TASK_ID="3", SLURM_CPUS_PER_TASK="8")
    assert proc.returncode == 0, proc.stderr
    call = (tmp_path / "calls").read_text().strip()
    assert "[--shard][3/16]" in call and f"[--device][{expected}][--threads][8]" in call, call


@pytest.mark.parametrize("name, values", [
    ("backmap.sbatch", dict(INPUT="a.h5", OUTPUT="b.h5", DEVICE="gpu")),
    ("backmap-array.sbatch", dict(INPUT="a.h5", OUTPUT="b.h5", SHARDS="2", LAST_SHARD="1", DEVICE="cuda0")),
])
def test_backmap_jobs_refuse_an_unknown_device_before_srun(name, values, tmp_path):
    proc = _run_job(_render(name, values), tmp_path, SLURM_ARRAY_TASK_ID="0")
    assert proc.returncode == 2 and "DEVICE must be auto, cpu, cuda or cuda:N" in proc.stderr
    assert not (tmp_path / "calls").exists()


@pytest.mark.parametrize("name", ["backmap.sbatch", "backmap-array.sbatch"])
def test_backmap_templates_default_to_the_shipped_learned_model(name):
    """A template submitted with its defaults runs the learned model, not the baseline (46 clashes per 1000 atoms)."""
    from ldb_hpc.model.backmappers import LDBBackmapper, load_backmapper

    values = dict(INPUT="a.h5", OUTPUT="b.h5") if name == "backmap.sbatch" else \
        dict(INPUT="a.h5", OUTPUT="b.h5", SHARDS="4", LAST_SHARD="3")
    script = _render(name, values)
    model = re.search(r'--model "([^"]*)"', script).group(1)
    assert model == "default"
    backmapper = load_backmapper(model)
    assert isinstance(backmapper, LDBBackmapper) and backmapper.name == "ldb-default"


def test_empty_optional_sbatch_lines_are_dropped(tmp_path):
    script = _render("backmap.sbatch", dict(INPUT="a.h5", OUTPUT="b.h5"))
    _bash_n(script, tmp_path)
    for option in ("--gpus-per-node", "--partition", "--account", "--mem-per-cpu"):
        assert option not in script  # the cluster's default applies
    assert "#SBATCH --ntasks-per-node=2" in script  # defaults are used


def test_array_task_runs_its_shard(tmp_path):
    script = _render("backmap-array.sbatch", SAMPLES["backmap-array.sbatch"])
    assert "#SBATCH --array=0-15" in script and "shards=16" in script
    assert '--shard "$index/$shards"' in script and "index=${SLURM_ARRAY_TASK_ID:?" in script
    # Run the body with stubs for srun/ldb-hpc: task 3 of 16 asks for --shard 3/16.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text('#!/bin/sh\necho "srun $*" >> "$CALLS"\n')
    (bin_dir / "srun").chmod(0o755)
    job = tmp_path / "array.sbatch"
    job.write_text(script)
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", CALLS=str(tmp_path / "calls"),
               SLURM_ARRAY_TASK_ID="3", SLURM_ARRAY_TASK_COUNT="16", SLURM_CPUS_PER_TASK="8")
    proc = subprocess.run(["bash", str(job)], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    call = (tmp_path / "calls").read_text()
    assert "--shard 3/16" in call and "--threads 8" in call and "backmap big.h5 -o big.aa.h5" in call
    # A wrong array size is refused before anything runs.
    env["SLURM_ARRAY_TASK_COUNT"] = "8"
    proc = subprocess.run(["bash", str(job)], env=env, capture_output=True, text=True)
    assert proc.returncode == 2 and "SHARDS=16" in proc.stderr


def test_submit_array_chains_merge_after_the_array(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    # A stand-in sbatch: records its arguments, answers job ids 1001, 1002 like `sbatch --parsable`.
    (bin_dir / "sbatch").write_text(
        '#!/bin/sh\nn=$(($(wc -l < "$CALLS" 2>/dev/null || echo 0) + 1001))\n'
        'echo "$*" >> "$CALLS"\necho "$n;cluster"\n')
    (bin_dir / "sbatch").chmod(0o755)
    calls = tmp_path / "calls"
    env = dict(os.environ, SBATCH=str(bin_dir / "sbatch"), CALLS=str(calls), JOB_DIR=str(tmp_path / "jobs"),
               PYTHON=sys.executable)
    proc = subprocess.run(["bash", str(REPO / "slurm" / "submit-array.sh"), "INPUT=big.h5", "OUTPUT=out.h5",
                           "SHARDS=4", "PARTITION=cpu", "MERGE_TIME=00:05:00", "MAX_RUNNING=2"],
                          env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    first, second = calls.read_text().splitlines()
    assert first.startswith("--parsable --array=0-3%2 ") and first.endswith("backmap-array.sbatch")
    assert "--dependency=afterok:1001 " in second and second.endswith("merge.sbatch")
    assert "array job 1001 (4 tasks), merge job 1002" in proc.stdout
    array = (tmp_path / "jobs" / "backmap-array.sbatch").read_text()
    merge = (tmp_path / "jobs" / "merge.sbatch").read_text()
    assert "#SBATCH --array=0-3" in array and "#SBATCH --partition=cpu" in array
    assert '"ldb-hpc" merge "out.h5"' in merge and "#SBATCH --time=00:05:00" in merge
    assert "#SBATCH --partition=cpu" in merge
    for text in (array, merge):
        _bash_n(text, tmp_path)
    # Bad SHARDS: nothing is submitted.
    calls.unlink()
    proc = subprocess.run(["bash", str(REPO / "slurm" / "submit-array.sh"), "INPUT=a", "OUTPUT=b", "SHARDS=0"],
                          env=env, capture_output=True, text=True)
    assert proc.returncode == 2 and "SHARDS must be a positive integer" in proc.stderr and not calls.exists()


def _stub_bin(tmp_path: Path) -> Path:
    """srun and scontrol stand-ins that record their arguments in $CALLS."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "srun").write_text('#!/bin/sh\nfor a in "$@"; do printf "[%s]" "$a"; done >> "$CALLS"\n'
                                  'echo >> "$CALLS"\n')
    (bin_dir / "scontrol").write_text("#!/bin/sh\necho node1\necho node2\n")
    for name in ("srun", "scontrol"):
        (bin_dir / name).chmod(0o755)
    return bin_dir


@pytest.mark.parametrize("stage, init, expected", [
    ("diffusion", "runs/tok/model", "[train][diffusion][--data][train.h5][--out][runs/diff][--init][runs/tok/model]"
                                    "[--steps][3000][--threads][4][--lr][1e-3]"),
    ("tokenizer", "", "[train][tokenizer][--data][train.h5][--out][runs/diff]"
                      "[--steps][3000][--threads][4][--lr][1e-3]"),
])
def test_train_job_runs_srun_train(stage, init, expected, tmp_path):
    script = _render("train.sbatch", dict(SAMPLES["train.sbatch"], STAGE=stage, INIT=init))
    assert "export MASTER_ADDR MASTER_PORT=29500" in script
    job = tmp_path / "train.sbatch"
    job.write_text(script)
    env = dict(os.environ, PATH=f"{_stub_bin(tmp_path)}:{os.environ['PATH']}", CALLS=str(tmp_path / "calls"),
               SLURM_CPUS_PER_TASK="4", SLURM_JOB_NODELIST="node[1-2]")
    proc = subprocess.run(["bash", str(job)], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    call = (tmp_path / "calls").read_text().strip()
    assert call.startswith("[--cpus-per-task=4][--kill-on-bad-exit=1][ldb-hpc]") and call.endswith(expected), call
    assert "rendezvous node1:29500" in proc.stdout


def test_train_job_checks_stage(tmp_path):
    bad = _render("train.sbatch", dict(SAMPLES["train.sbatch"], STAGE="everything"))
    job = tmp_path / "bad.sbatch"
    job.write_text(bad)
    proc = subprocess.run(["bash", str(job)], capture_output=True, text=True)
    assert proc.returncode == 2 and "STAGE must be tokenizer or diffusion" in proc.stderr


@pytest.mark.parametrize("values, message", [
    (dict(INPUT="a.h5"), "OUTPUT is required"),
    (dict(INPUT="a.h5", OUTPUT="b.h5", NODESS="2"), "unknown parameter(s) NODESS"),
    (dict(INPUT="a.h5", OUTPUT="b.h5; rm -rf /"), "unsafe in a shell script"),
    (dict(INPUT='a".h5', OUTPUT="b.h5"), "unsafe in a shell script"),
    (dict(INPUT="$(whoami).h5", OUTPUT="b.h5"), "unsafe in a shell script"),
])
def test_bad_values_are_refused(values, message):
    with pytest.raises(render_slurm.RenderError, match=re.escape(message)):
        _render("backmap.sbatch", values)


def test_undeclared_placeholder_is_an_error():
    with pytest.raises(render_slurm.RenderError, match="NOPE used but not declared"):
        render_slurm.render("#!/bin/bash\n# @param A=1  a\necho @A@ @NOPE@\n", {})


def test_cli_writes_executable_script_and_one_line_errors(tmp_path):
    script = REPO / "scripts" / "render_slurm.py"
    out = tmp_path / "job.sbatch"
    proc = subprocess.run([sys.executable, str(script), str(REPO / "slurm" / "merge.sbatch"), "OUTPUT=x.h5",
                           "-o", str(out)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert os.access(out, os.X_OK) and '"ldb-hpc" merge "x.h5"' in out.read_text()
    proc = subprocess.run([sys.executable, str(script), str(REPO / "slurm" / "merge.sbatch"), "BOGUS"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and len(proc.stderr.splitlines()) == 1
    assert "Traceback" not in proc.stderr


@pytest.mark.skipif(shutil.which("sbatch") is None or not os.environ.get("SLURM_CONF"),
                    reason="no SLURM here (sbatch absent or SLURM_CONF unset; `make test` starts a local one)")
@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_sbatch_accepts_rendered_templates(name, tmp_path):
    """`sbatch --test-only` parses the #SBATCH lines (no job is queued)."""
    values = dict(SAMPLES[name])
    for key in ("NODES", "GPUS_PER_NODE", "PARTITION", "ACCOUNT", "TASKS_PER_NODE"):
        values.pop(key, None)  # the local cluster: one node, no GPUs, default partition
    if "CPUS_PER_TASK" in render_slurm.parse_params((REPO / "slurm" / name).read_text()):
        values["CPUS_PER_TASK"] = "1"  # the local node may have only 2 CPUs
    if name == "backmap-array.sbatch":
        values.update(SHARDS="2", LAST_SHARD="1")
    job = tmp_path / name
    job.write_text(_render(name, values))
    proc = subprocess.run(["sbatch", "--test-only", str(job)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "to start at" in proc.stderr
