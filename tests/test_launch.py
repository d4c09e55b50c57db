"""Cluster launch: bin/stk-torchrun's torchrun command lines (one node, Slurm multi-node with c10d
rendezvous), stk_train's ${cuda_cmd} line for nnodes/nproc_per_node, and utils/slurm.sh --nodes
(one task per node through srun). No Slurm here: sbatch, srun and scontrol are fakes on PATH."""

from __future__ import annotations

import os
import shlex
import stat
import subprocess
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAUNCH = ROOT / "bin" / "stk-torchrun"
PY = str(ROOT / ".venv" / "bin" / "python")


def write(path: Path, text: str, executable: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip())
    if executable:
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def run(args, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "STK_RDZV"))}
    return subprocess.run(args, cwd=cwd, env={**base, "STK_PYTHON": PY, **(env or {})}, capture_output=True,
                          text=True, timeout=60)


@pytest.fixture
def fakes(tmp_path: Path) -> dict:
    """scontrol, srun and sbatch fakes; the returned env puts them (and bin/) first on PATH."""
    bin_dir = tmp_path / "fakebin"
    write(bin_dir / "scontrol", """
        #!/usr/bin/env bash
        # scontrol show hostnames gpu[012-013] -> one host per line
        [ "$1 $2" = "show hostnames" ] || exit 2
        echo gpu012; echo gpu013
        """, executable=True)
    write(bin_dir / "srun", """
        #!/usr/bin/env bash
        # fake srun: record the options, then run the command once per node, one after another
        opts=(); while [[ $1 == --* ]]; do opts+=("$1"); shift; done
        printf '%s\\n' "${opts[@]}" > "$FAKE_SRUN_ARGS"
        for ((i = 0; i < SLURM_NNODES; i++)); do SLURM_NODEID=$i SLURMD_NODENAME=gpu01$((2 + i)) "$@" || exit $?; done
        """, executable=True)
    write(bin_dir / "sbatch", """
        #!/usr/bin/env bash
        # fake sbatch --wait: run the batch script here as job 77 on nodes gpu[012-013]
        script=${!#}
        out=$(sed -n 's/^#SBATCH --output=//p' "$script")
        nodes=$(sed -n 's/^#SBATCH --nodes=//p' "$script")
        echo "Submitted batch job 77"
        SLURM_JOB_ID=77 SLURM_NNODES=${nodes:-1} SLURM_JOB_NODELIST='gpu[012-013]' bash "$script" > "$out" 2>&1
        """, executable=True)
    return {"PATH": f"{bin_dir}{os.pathsep}{ROOT / 'bin'}{os.pathsep}{os.environ['PATH']}",
            "FAKE_SRUN_ARGS": str(tmp_path / "srun.args")}


def torchrun_argv(line: str) -> list[str]:
    argv = shlex.split(line)
    assert argv[:3] == [PY, "-m", "torch.distributed.run"], argv
    return argv[3:]


def test_one_node_is_standalone(tmp_path):
    proc = run([str(LAUNCH), "--nproc-per-node", "4", "--dry-run", "--", "train", "--config", "conf/a b.yaml",
                "--exp-dir", "exp/x", "trainer.amp=bf16"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert torchrun_argv(proc.stdout) == ["--standalone", "--nproc-per-node", "4", "-m", "stk.cli", "train",
                                          "--config", "conf/a b.yaml", "--exp-dir", "exp/x", "trainer.amp=bf16"]


def test_slurm_multi_node_uses_c10d_rendezvous_on_the_first_node(tmp_path, fakes):
    env = {**fakes, "SLURM_JOB_ID": "77", "SLURM_NNODES": "2", "SLURM_JOB_NODELIST": "gpu[012-013]"}
    proc = run([str(LAUNCH), "--nnodes", "2", "--nproc-per-node", "8", "--dry-run", "--", "train", "--config",
                "c.yaml", "--exp-dir", "exp/x"], tmp_path, env)
    assert proc.returncode == 0, proc.stderr
    assert torchrun_argv(proc.stdout) == [
        "--nnodes", "2", "--nproc-per-node", "8", "--rdzv-backend", "c10d", "--rdzv-endpoint", "gpu012:29400",
        "--rdzv-id", "77", "-m", "stk.cli", "train", "--config", "c.yaml", "--exp-dir", "exp/x"]


def test_multi_node_errors_are_clear(tmp_path, fakes):
    cmd = [str(LAUNCH), "--nnodes", "2", "--dry-run", "--", "train"]
    proc = run(cmd, tmp_path, fakes)  # not in a Slurm job, no endpoint
    assert proc.returncode == 1 and "no rendezvous host" in proc.stderr and "--rdzv-endpoint" in proc.stderr
    proc = run(cmd, tmp_path, {**fakes, "SLURM_JOB_ID": "5", "SLURM_NNODES": "4", "SLURM_JOB_NODELIST": "n[1-4]"})
    assert proc.returncode == 1 and "this Slurm job has 4 nodes" in proc.stderr
    proc = run([*cmd[:3], "--rdzv-endpoint", "head:1234", *cmd[3:]], tmp_path, fakes)
    assert proc.returncode == 1 and "STK_RDZV_ID" in proc.stderr
    proc = run([*cmd[:3], "--rdzv-endpoint", "head:1234", *cmd[3:]], tmp_path, {**fakes, "STK_RDZV_ID": "exp1"})
    assert proc.returncode == 0, proc.stderr
    assert "--rdzv-endpoint head:1234 --rdzv-id exp1" in proc.stdout
    proc = run([str(LAUNCH), "--nnodes", "0", "--", "train"], tmp_path)
    assert proc.returncode == 1 and "positive integer" in proc.stderr
    proc = run([str(LAUNCH), "train"], tmp_path)
    assert proc.returncode == 1 and "after --" in proc.stderr


@pytest.mark.parametrize("variables, expect", [
    ("nproc=1", ["exp/x/log/train.log", "stk"]),
    ("nproc=2", ["--gpu", "2", "exp/x/log/train.log", "stk-torchrun", "--nnodes", "1", "--nproc-per-node", "2", "--"]),
    ("nnodes=2 nproc_per_node=8", ["--nodes", "2", "--gpu", "8", "exp/x/log/train.log", "stk-torchrun", "--nnodes",
                                   "2", "--nproc-per-node", "8", "--"]),
])
def test_stk_train_command_line(tmp_path, variables, expect):
    rec = write(tmp_path / "fakebin" / "record", '#!/usr/bin/env bash\nprintf "%s\\n" "$@" > "$RECORD"\n'
                "mkdir -p exp/x  # what the training run would create\n", executable=True)
    write(tmp_path / "fakebin" / "stk", "#!/usr/bin/env bash\necho \"stk $*\" >> averaged\n", executable=True)
    script = (f"set -euo pipefail; . {ROOT}/utils/lib/train.sh; cuda_cmd={rec}; {variables}; "
              "stk_train c.yaml exp/x data.cmvn=dump/cmvn.json")
    proc = run(["bash", "-c", script], tmp_path, {"PATH": f"{tmp_path / 'fakebin'}{os.pathsep}{os.environ['PATH']}",
                                                   "RECORD": str(tmp_path / "args")})
    assert proc.returncode == 0, proc.stderr
    args = (tmp_path / "args").read_text().splitlines()
    assert args == expect + ["train", "--config", "c.yaml", "--exp-dir", "exp/x", "data.cmvn=dump/cmvn.json"]
    assert (tmp_path / "averaged").read_text() == "stk average exp/x --n 1\n"
    assert (tmp_path / "exp/x/.done").exists()


def test_slurm_multi_node_job_runs_the_launcher_on_every_node(tmp_path, fakes):
    (tmp_path / "utils").symlink_to(ROOT / "utils")
    proc = run(["utils/slurm.sh", "--gpu", "8", "--num-threads", "32", "--nodes", "2", "exp/log/train.log",
                "stk-torchrun", "--nnodes", "2", "--nproc-per-node", "8", "--dry-run", "--", "train", "--config",
                "c.yaml", "--exp-dir", "exp"], tmp_path, fakes)
    assert proc.returncode == 0, proc.stderr
    script = (tmp_path / "exp/log/q/train.sh").read_text().splitlines()
    for line in ["#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=1", "#SBATCH --gres=gpu:8",
                 "#SBATCH --cpus-per-task=32"]:
        assert line in script
    assert (tmp_path / "srun.args").read_text().splitlines() == ["--nodes=2", "--ntasks-per-node=1",
                                                                  "--kill-on-bad-exit=1"]
    log = (tmp_path / "exp/log/train.log").read_text()
    lines = [ln for ln in log.splitlines() if "torch.distributed.run" in ln]
    assert len(lines) == 2  # one launcher per node, both meeting at the first node
    for ln in lines:
        assert torchrun_argv(ln)[:10] == ["--nnodes", "2", "--nproc-per-node", "8", "--rdzv-backend", "c10d",
                                          "--rdzv-endpoint", "gpu012:29400", "--rdzv-id", "77"]
    assert "# Ended (code 0)" in log


def test_multi_node_needs_one_command_and_slurm(tmp_path, fakes):
    (tmp_path / "utils").symlink_to(ROOT / "utils")
    proc = run(["utils/slurm.sh", "--nodes", "2", "JOB=1:2", "exp/log/x.JOB.log", "true"], tmp_path, fakes)
    assert proc.returncode == 1 and "no job array" in proc.stderr
    proc = run(["utils/run.sh", "--nodes", "2", "exp/log/x.log", "true"], tmp_path)
    assert proc.returncode == 1 and "cmd_backend=slurm" in proc.stderr
    proc = run(["utils/run.sh", "--nodes", "1", "exp/log/x.log", "true"], tmp_path)
    assert proc.returncode == 0, proc.stderr
