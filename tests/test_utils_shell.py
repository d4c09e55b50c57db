"""Tests for the Kaldi-style shell helpers in utils/ and egs/TEMPLATE/cmd.sh.

Each test drives the scripts with subprocess in a temporary folder. slurm.sh is
run against a fake ``sbatch`` placed first on PATH, which runs the array tasks
here, one after another.
"""

from __future__ import annotations

import os
import re
import signal
import stat
import subprocess
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
UTILS = ROOT / "utils"


def sh(args, cwd: Path, env: dict | None = None, check: bool | None = None):
    """Run a command; return the CompletedProcess (text mode)."""
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run(
        args, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=30
    )
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def write(path: Path, text: str, executable: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip())
    if executable:
        path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


@pytest.mark.parametrize("name", ["run.sh", "slurm.sh", "split_scp.sh"])
def test_scripts_are_executable(name):
    assert os.access(UTILS / name, os.X_OK)


# --------------------------------------------------------------------------
# parse_options.sh


@pytest.fixture
def opts_script(tmp_path: Path) -> Path:
    return write(
        tmp_path / "script.sh",
        f"""
        #!/usr/bin/env bash
        set -euo pipefail
        # Begin configuration section
        nj=4
        feat_type=fbank
        use_gpu=false
        lm_weight=0.5
        extra=""
        help_message="Usage: script.sh [options] <in> <out>
          --nj N   number of jobs"
        # End configuration section
        . {UTILS}/parse_options.sh
        echo "nj=$nj feat_type=$feat_type use_gpu=$use_gpu lm_weight=$lm_weight extra=$extra"
        echo "nargs=$#"
        for a in "$@"; do echo "arg=$a"; done
        """,
    )


def run_opts(script: Path, *args: str):
    return sh(["bash", str(script), *args], cwd=script.parent)


def test_parse_options_defaults_and_known_options(opts_script):
    out = run_opts(opts_script).stdout
    assert "nj=4 feat_type=fbank use_gpu=false lm_weight=0.5 extra=" in out
    proc = run_opts(opts_script, "--nj", "8", "--feat-type", "mfcc", "--lm_weight=0.3",
                    "--extra", "a b  c")
    assert proc.returncode == 0, proc.stderr
    assert "nj=8 feat_type=mfcc use_gpu=false lm_weight=0.3 extra=a b  c" in proc.stdout
    assert "nargs=0" in proc.stdout


def test_parse_options_positional_args_stay(opts_script):
    proc = run_opts(opts_script, "--nj", "2", "data/train", "exp dir", "--nj", "3")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert "nj=2" in lines[0]
    # parsing stops at the first positional argument
    assert lines[1:] == ["nargs=4", "arg=data/train", "arg=exp dir", "arg=--nj", "arg=3"]
    # "--" ends the options
    proc = run_opts(opts_script, "--", "--nj", "5")
    assert proc.stdout.splitlines()[1:] == ["nargs=2", "arg=--nj", "arg=5"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--num-jobs", "3"], "unknown option --num-jobs"),
        (["--nj"], "option --nj needs a value"),
        (["--use-gpu", "yes"], "boolean"),
        (["--config", "missing.conf"], "no such file: missing.conf"),
    ],
)
def test_parse_options_errors(opts_script, args, message):
    proc = run_opts(opts_script, *args)
    assert proc.returncode == 1
    assert message in proc.stderr
    assert proc.stdout == ""


def test_parse_options_booleans(opts_script):
    assert "use_gpu=true" in run_opts(opts_script, "--use-gpu", "true").stdout
    assert "use_gpu=false" in run_opts(opts_script, "--use-gpu=false").stdout


def test_parse_options_config(opts_script):
    write(
        opts_script.parent / "conf" / "x.conf",
        """
        # a comment
        nj=16
        feat-type="mfcc hires"

        use_gpu=true
        """,
    )
    proc = run_opts(opts_script, "--config", "conf/x.conf", "--nj", "2", "pos")
    assert proc.returncode == 0, proc.stderr
    # the command line after --config wins over the file
    assert "nj=2 feat_type=mfcc hires use_gpu=true" in proc.stdout
    assert "arg=pos" in proc.stdout

    write(opts_script.parent / "bad.conf", "nj=3\nbeam=10\n")
    proc = run_opts(opts_script, "--config", "bad.conf")
    assert proc.returncode == 1
    assert "'beam' in bad.conf:2" in proc.stderr


def test_parse_options_config_is_not_executed(opts_script, tmp_path):
    write(tmp_path / "evil.conf", "nj=$(touch pwned)\n")
    proc = run_opts(opts_script, "--config", "evil.conf")
    assert proc.returncode == 0
    assert "nj=$(touch pwned)" in proc.stdout
    assert not (tmp_path / "pwned").exists()


def test_parse_options_help(opts_script):
    proc = run_opts(opts_script, "--nj", "3", "--help")
    assert proc.returncode == 0
    assert proc.stdout.startswith("Usage: script.sh [options] <in> <out>")
    assert "--nj N" in proc.stdout


# --------------------------------------------------------------------------
# log.sh


def test_log_prints_date_file_line(tmp_path):
    script = write(
        tmp_path / "recipe.sh",
        f"""
        set -euo pipefail
        . {UTILS}/log.sh
        log "Stage 1: hello  world"
        """,
    )
    proc = sh(["bash", str(script)], cwd=tmp_path, check=True)
    assert proc.stdout == ""
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d recipe\.sh:3 Stage 1: hello  world\n", proc.stderr
    ), proc.stderr


# --------------------------------------------------------------------------
# run.sh

FOOTER = re.compile(
    r"# Accounting: time=\d+ threads=(\d+)\n# Ended \(code (\d+)\) at .*, elapsed time \d+ seconds\n\Z"
)


def test_run_single_job_log_format(tmp_path):
    proc = sh([str(UTILS / "run.sh"), "--mem", "4G", "--gpu", "0", "--num-threads", "2",
               "exp/log/a.log", "echo", "hello world", "it's"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == proc.stderr == ""
    log = (tmp_path / "exp/log/a.log").read_text()
    lines = log.splitlines()
    assert lines[0] == "# echo 'hello world' 'it'\\''s'"
    assert lines[1].startswith("# Started at ")
    assert "hello world it's\n" in log
    m = FOOTER.search(log)
    assert m and m.groups() == ("2", "0"), log


def test_run_job_array_substitutes_job(tmp_path):
    proc = sh([str(UTILS / "run.sh"), "JOB=1:3", "log/x.JOB.log",
               "echo", "JOB", "in.JOB.scp", "id JOB here", "JOBS", "feats_JOB",
               ">", "out.JOB.txt"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    for j in (1, 2, 3):
        assert (tmp_path / f"out.{j}.txt").read_text() == (
            f"{j} in.{j}.scp id {j} here JOBS feats_JOB\n"
        )
        log = (tmp_path / f"log/x.{j}.log").read_text()
        assert log.startswith(f"# echo {j} in.{j}.scp 'id {j} here'")
        assert FOOTER.search(log).group(2) == "0"


def test_run_shell_string_and_other_job_name(tmp_path):
    proc = sh([str(UTILS / "run.sh"), "SPLIT=2:3", "log/s.SPLIT.log",
               "seq SPLIT | wc -l > n.SPLIT; echo done SPLIT >&2"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "n.3").read_text().strip() == "3"
    assert "done 3\n" in (tmp_path / "log/s.3.log").read_text()
    assert not (tmp_path / "log/s.1.log").exists()


def test_run_failure_propagates(tmp_path):
    proc = sh([str(UTILS / "run.sh"), "JOB=1:4", "log/f.JOB.log",
               "echo start JOB; [ JOB -ne 2 ] && [ JOB -ne 4 ]"], cwd=tmp_path)
    assert proc.returncode == 1
    assert "job JOB=2 failed (code 1); see log/f.2.log" in proc.stderr
    assert "job JOB=4 failed (code 1); see log/f.4.log" in proc.stderr
    assert "2 / 4 jobs failed" in proc.stderr
    assert FOOTER.search((tmp_path / "log/f.2.log").read_text()).group(2) == "1"
    assert FOOTER.search((tmp_path / "log/f.3.log").read_text()).group(2) == "0"

    proc = sh([str(UTILS / "run.sh"), "log/one.log", "exit 3"], cwd=tmp_path)
    assert proc.returncode == 1
    assert "command failed (code 3); see log/one.log" in proc.stderr


def max_concurrency(events_file: Path) -> int:
    events = []
    for line in events_file.read_text().split():
        kind, t = line.split(":")
        events.append((int(t), 0 if kind == "end" else 1))
    running = peak = 0
    for _, is_start in sorted(events):
        running += 1 if is_start else -1
        peak = max(peak, running)
    return peak


@pytest.mark.parametrize("max_jobs", [1, 2])
def test_run_max_jobs_limit(tmp_path, max_jobs):
    events = tmp_path / "events"
    # Each job waits (up to 3 s) until max_jobs jobs have started, so that the
    # jobs surely overlap when they may, however busy the machine is.
    cmd = (f"echo start:$(date +%s%N) >> {events}; "
           f"for _ in $(seq 150); do [ $(grep -c start {events}) -ge {max_jobs} ] && break; "
           f"sleep 0.02; done; sleep 0.1; echo end:$(date +%s%N) >> {events}")
    proc = sh([str(UTILS / "run.sh"), "--max-jobs-run", str(max_jobs), "JOB=1:4",
               "log/m.JOB.log", cmd], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert len(events.read_text().split()) == 8
    assert max_concurrency(events) == max_jobs


def process_gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")  # a zombie nobody reaped still counts as gone


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc")
def test_run_sigterm_stops_all_jobs(tmp_path):
    proc = subprocess.Popen(
        [str(UTILS / "run.sh"), "JOB=1:2", "log/t.JOB.log", "sleep 30 & echo $! > pid.JOB; wait"],
        cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    pid_files = [tmp_path / "pid.1", tmp_path / "pid.2"]
    deadline = time.monotonic() + 10
    while not all(f.exists() and f.read_text().strip() for f in pid_files):
        assert time.monotonic() < deadline, "jobs did not start"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 143
    assert "interrupted" in proc.stderr.read()
    deadline = time.monotonic() + 5  # the children get SIGTERM; give a loaded machine time to reap them
    while not all(process_gone(int(f.read_text())) for f in pid_files) and time.monotonic() < deadline:
        time.sleep(0.05)
    for f in pid_files:
        assert process_gone(int(f.read_text())), "a job's child survived"


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "expected LOGFILE and CMD"),
        (["log/x.log"], "expected LOGFILE and CMD"),
        (["--frobnicate", "1", "log/x.log", "true"], "unknown option --frobnicate"),
        (["--max-jobs-run", "0", "log/x.log", "true"], "positive integer"),
        (["JOB=3:1", "log/x.JOB.log", "true"], "empty job range"),
        (["JOB=1-3", "log/x.JOB.log", "true"], "bad job range"),
        (["JOB=1:3", "log/x.log", "true"], "3 jobs would share one log file"),
    ],
)
def test_run_bad_usage(tmp_path, args, message):
    proc = sh([str(UTILS / "run.sh"), *args], cwd=tmp_path)
    assert proc.returncode == 1
    assert message in proc.stderr
    assert "Usage: run.sh" in proc.stderr or "share one log" in proc.stderr


# --------------------------------------------------------------------------
# slurm.sh

FAKE_SBATCH = r"""
#!/usr/bin/env bash
# Fake sbatch: records its arguments, then runs the script's tasks here.
printf '%s\n' "$@" > "$FAKE_SBATCH_ARGS"
script=${!#}
array=$(sed -n 's/^#SBATCH --array=//p' "$script")
out=$(sed -n 's/^#SBATCH --output=//p' "$script")
echo "Submitted batch job 42"
rc=0
if [ -n "$array" ]; then
  range=${array%%%*}
  for ((i = ${range%-*}; i <= ${range#*-}; i++)); do
    SLURM_ARRAY_JOB_ID=42 SLURM_ARRAY_TASK_ID=$i bash "$script" > "${out//%a/$i}" 2>&1 || rc=1
  done
else
  SLURM_JOB_ID=42 bash "$script" > "$out" 2>&1 || rc=1
fi
exit $rc
"""


@pytest.fixture
def slurm_env(tmp_path: Path) -> dict:
    bin_dir = tmp_path / "fakebin"
    write(bin_dir / "sbatch", FAKE_SBATCH, executable=True)
    return {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "FAKE_SBATCH_ARGS": str(tmp_path / "sbatch.args"),
        "SLURM_PARTITION": "cpu",
    }


def test_slurm_job_array(tmp_path, slurm_env):
    proc = sh([str(UTILS / "slurm.sh"), "--mem", "8G", "--num-threads", "2", "--gpu", "1",
               "--time", "4:00:00", "--max-jobs-run", "2", "--sbatch-args", "--qos=high",
               "JOB=1:3", "exp/log/decode.JOB.log",
               "echo", "job JOB", "JOB", "|", "tr", "a-z", "A-Z"], cwd=tmp_path, env=slurm_env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""

    script = (tmp_path / "exp/log/q/decode.sh").read_text()
    for line in ["#SBATCH --job-name=decode",
                 "#SBATCH --output=exp/log/q/decode.%a.out",
                 "#SBATCH --array=1-3%2",
                 "#SBATCH --mem=8G",
                 "#SBATCH --cpus-per-task=2",
                 "#SBATCH --gres=gpu:1",
                 "#SBATCH --time=4:00:00",
                 "#SBATCH --partition=cpu"]:
        assert line in script.splitlines(), script
    assert script.startswith("#!/usr/bin/env bash\n")
    assert "--account" not in script
    assert (tmp_path / "sbatch.args").read_text().splitlines() == [
        "--wait", "--qos=high", "exp/log/q/decode.sh"]

    for j in (1, 2, 3):
        log = (tmp_path / f"exp/log/decode.{j}.log").read_text()
        assert f"JOB {j} {j}\n" in log
        m = FOOTER.search(log)
        assert m and m.groups() == ("2", "0"), log


def test_slurm_single_job_and_options(tmp_path, slurm_env):
    proc = sh([str(UTILS / "slurm.sh"), "--partition", "gpu", "--account", "asr",
               "exp/log/train.log", "echo trained > model.txt"], cwd=tmp_path, env=slurm_env)
    assert proc.returncode == 0, proc.stderr
    script = (tmp_path / "exp/log/q/train.sh").read_text()
    assert "#SBATCH --partition=gpu" in script  # the option wins over $SLURM_PARTITION
    assert "#SBATCH --account=asr" in script
    assert "#SBATCH --output=exp/log/q/train.out" in script
    assert "--array" not in script and "--gres" not in script and "--mem" not in script
    assert (tmp_path / "model.txt").read_text() == "trained\n"
    assert FOOTER.search((tmp_path / "exp/log/train.log").read_text()).group(2) == "0"


def test_slurm_failure_propagates(tmp_path, slurm_env):
    proc = sh([str(UTILS / "slurm.sh"), "JOB=1:3", "exp/log/f.JOB.log", "[ JOB != 2 ]"],
              cwd=tmp_path, env=slurm_env)
    assert proc.returncode == 1
    assert "job JOB=2 failed (code 1); see exp/log/f.2.log" in proc.stderr
    assert "1 / 3 jobs failed" in proc.stderr


def test_slurm_task_that_never_ran(tmp_path, slurm_env):
    # A task killed by Slurm (time/memory limit) leaves no footer in its log.
    write(tmp_path / "fakebin" / "sbatch", "#!/usr/bin/env bash\necho 'Submitted batch job 7'\n"
          "exit 1\n", executable=True)
    proc = sh([str(UTILS / "slurm.sh"), "JOB=1:2", "exp/log/k.JOB.log", "true"],
              cwd=tmp_path, env=slurm_env)
    assert proc.returncode == 1
    assert "job JOB=1 did not finish" in proc.stderr
    assert "exp/log/q/k.1.out" in proc.stderr
    assert "sbatch failed (code 1)" in proc.stderr


def test_slurm_sigterm_cancels_job(tmp_path, slurm_env):
    bin_dir = tmp_path / "fakebin"
    write(bin_dir / "sbatch", "#!/usr/bin/env bash\necho 'Submitted batch job 42'\nexec sleep 30\n",
          executable=True)
    write(bin_dir / "scancel", f"#!/usr/bin/env bash\necho \"$@\" > {tmp_path}/scancel.args\n",
          executable=True)
    proc = subprocess.Popen([str(UTILS / "slurm.sh"), "JOB=1:2", "exp/log/c.JOB.log", "true"],
                            cwd=tmp_path, env={**os.environ, **slurm_env},
                            stderr=subprocess.PIPE, text=True)
    sbatch_log = tmp_path / "exp/log/q/c.sbatch.log"
    deadline = time.monotonic() + 10
    while not (sbatch_log.exists() and "42" in sbatch_log.read_text()):
        assert time.monotonic() < deadline, "sbatch was not called"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 143
    assert "cancelled Slurm job 42" in proc.stderr.read()
    assert (tmp_path / "scancel.args").read_text().strip() == "42"


def test_slurm_without_sbatch(tmp_path):
    env = {"PATH": "/usr/bin:/bin"}
    if Path("/usr/bin/sbatch").exists() or Path("/bin/sbatch").exists():
        pytest.skip("a real sbatch is installed")
    proc = sh([str(UTILS / "slurm.sh"), "log/x.log", "true"], cwd=tmp_path, env=env)
    assert proc.returncode == 1
    assert "sbatch not found" in proc.stderr


# --------------------------------------------------------------------------
# split_scp.sh


def split(tmp_path: Path, *args: str):
    return sh([str(UTILS / "split_scp.sh"), *args], cwd=tmp_path)


@pytest.mark.parametrize("n_lines, n_out", [(10, 3), (7, 7), (5, 1), (100, 6)])
def test_split_scp_conserves_lines(tmp_path, n_lines, n_out):
    lines = [f"utt{i:04d} /data/wav/utt{i:04d}.wav" for i in range(n_lines)]
    (tmp_path / "wav.scp").write_text("\n".join(lines) + "\n")
    outs = [f"split{n_out}/{j}/wav.scp" for j in range(1, n_out + 1)]
    proc = split(tmp_path, "wav.scp", *outs)
    assert proc.returncode == 0, proc.stderr
    parts = [(tmp_path / o).read_text().splitlines() for o in outs]
    assert sum(parts, []) == lines  # contiguous, in order, nothing lost
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1 and min(sizes) >= 1


def test_split_scp_keeps_speakers_together(tmp_path):
    spk_sizes = {"spkA": 5, "spkB": 1, "spkC": 3, "spkD": 2, "spkE": 4, "spkF": 1}
    utts = [(f"{s}-u{i}", s) for s, n in spk_sizes.items() for i in range(n)]
    (tmp_path / "utt2spk").write_text("".join(f"{u} {s}\n" for u, s in utts))
    (tmp_path / "feats.scp").write_text("".join(f"{u} ark:f.ark:{k}\n" for k, (u, _) in enumerate(utts)))
    outs = ["s/1.scp", "s/2.scp", "s/3.scp"]
    proc = split(tmp_path, "--utt2spk", "utt2spk", "feats.scp", *outs)
    assert proc.returncode == 0, proc.stderr
    parts = [(tmp_path / o).read_text().splitlines() for o in outs]
    assert sum(parts, []) == (tmp_path / "feats.scp").read_text().splitlines()
    owner = {}
    for j, part in enumerate(parts):
        assert part, "every part gets at least one speaker"
        for line in part:
            spk = line.split("-")[0]
            assert owner.setdefault(spk, j) == j, f"{spk} split across parts"
    # 16 lines, 3 parts: speaker boundaries allow 5/6/5 (A | B C D | E F)
    assert [len(p) for p in parts] == [5, 6, 5]


def test_split_scp_errors(tmp_path):
    (tmp_path / "in.scp").write_text("a 1\nb 2\nc 3\n")
    proc = split(tmp_path, "in.scp", "1", "2", "3", "4")
    assert proc.returncode == 1
    assert "4 outputs but in.scp has only 3 lines" in proc.stderr

    (tmp_path / "u2s").write_text("a s1\nb s1\nc s2\n")
    proc = split(tmp_path, "--utt2spk", "u2s", "in.scp", "1", "2", "3")
    assert proc.returncode == 1
    assert "3 outputs but in.scp has only 2 speakers" in proc.stderr

    (tmp_path / "u2s").write_text("a s1\nb s2\nc s1\n")
    proc = split(tmp_path, "--utt2spk", "u2s", "in.scp", "1", "2")
    assert proc.returncode == 1
    assert 'speaker "s1" is not contiguous' in proc.stderr

    (tmp_path / "u2s").write_text("a s1\nb s1\n")
    proc = split(tmp_path, "--utt2spk", "u2s", "in.scp", "1", "2")
    assert proc.returncode == 1
    assert 'utterance "c" is not in u2s' in proc.stderr

    proc = split(tmp_path, "in.scp")
    assert proc.returncode == 1
    assert "Usage: split_scp.sh" in proc.stderr


# --------------------------------------------------------------------------
# egs/TEMPLATE/cmd.sh


@pytest.mark.parametrize("backend, expect", [("", "utils/run.sh"), ("local", "utils/run.sh"),
                                             ("slurm", "utils/slurm.sh ")])
def test_cmd_sh_backends(tmp_path, backend, expect):
    proc = sh(["bash", "-c", f"set -euo pipefail; cmd_backend={backend}; "
               f". {ROOT}/egs/TEMPLATE/cmd.sh; echo \"$train_cmd|$decode_cmd|$cuda_cmd\""],
              cwd=tmp_path, check=True)
    for value in proc.stdout.strip().split("|"):
        assert value.startswith(expect)


@pytest.mark.parametrize("backend", ["local", "slurm"])
def test_cmd_sh_same_recipe_line_on_both_backends(tmp_path, slurm_env, backend):
    # A recipe folder, as under egs/<corpus>/<task>/, with the utils link.
    (tmp_path / "utils").symlink_to(UTILS)
    recipe = write(
        tmp_path / "recipe.sh",
        f"""
        set -euo pipefail
        . {ROOT}/egs/TEMPLATE/cmd.sh
        ${{cuda_cmd}} --gpu 1 --mem 2G JOB=1:2 exp/log/train.JOB.log echo trained JOB
        ${{decode_cmd}} exp/log/score.log "cat exp/log/train.*.log | grep -c ^trained"
        """,
    )
    proc = sh(["bash", str(recipe)], cwd=tmp_path, env={**slurm_env, "cmd_backend": backend})
    assert proc.returncode == 0, proc.stderr
    assert "trained 2\n" in (tmp_path / "exp/log/train.2.log").read_text()
    assert "\n2\n" in (tmp_path / "exp/log/score.log").read_text()
    assert (tmp_path / "exp/log/q/train.sh").exists() == (backend == "slurm")


def test_cmd_sh_unknown_backend(tmp_path):
    proc = sh(["bash", "-c", f"set -euo pipefail; cmd_backend=sge; . {ROOT}/egs/TEMPLATE/cmd.sh; "
               "echo not reached"], cwd=tmp_path)
    assert proc.returncode != 0
    assert "unknown cmd_backend 'sge'" in proc.stderr
    assert "not reached" not in proc.stdout


# --------------------------------------------------------------------------
# utils/lib/bg.sh


@pytest.mark.parametrize("jobs", [1, 2])
def test_bg_runs_jobs_side_by_side_and_reports_failures(tmp_path, jobs):
    script = write(tmp_path / "s.sh", f"""
        #!/usr/bin/env bash
        set -euo pipefail
        jobs={jobs} OMP_NUM_THREADS=2
        . {UTILS}/lib/bg.sh
        job() {{ echo "$1 start $OMP_NUM_THREADS" >> log; sleep 0.5; echo "$1 end" >> log; }}
        bg_run job a; bg_run job b
        bg_wait
        echo waited >> log
        bg_run false; bg_run job c
        bg_wait || echo "failed $?" >> log
        """)
    proc = sh(["bash", str(script)], cwd=tmp_path)
    lines = (tmp_path / "log").read_text().splitlines()
    if jobs == 2:  # both started before either ended, each with half the threads; failures come from bg_wait
        assert proc.returncode == 0, proc.stderr
        assert lines[:2] == ["a start 1", "b start 1"] and lines.index("waited") == 4
        assert lines[-1] == "failed 1" and "c end" in lines
        assert "1 job(s) failed" in proc.stderr and "false" in proc.stderr
    else:  # in the foreground, in order, all threads; a failure stops the script at once (set -e)
        assert proc.returncode != 0
        assert lines == ["a start 2", "a end", "b start 2", "b end", "waited"]
