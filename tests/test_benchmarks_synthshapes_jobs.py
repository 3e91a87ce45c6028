"""benchmarks/synthshapes/jobs.py: the in-process train.py pool (TrainPool, run_train_jobs) and its scheduling."""
import json
from pathlib import Path

import pytest

from benchmarks.synthshapes.jobs import Job, JobFailed, TrainPool, _call_logged, _next_job, run_train_jobs
from trainers import teacher_cache

import trainers_tiny_setup as tiny

REPO = Path(__file__).resolve().parents[1]


def test_next_job_keeps_groups_on_their_worker_and_no_worker_idle():
    jobs = [Job(f"j{i}", [], Path("x"), group=g) for i, g in enumerate("aabbbc")]
    pending = list(range(len(jobs)))
    assert _next_job(jobs, pending, None, set()) == 2            # largest group first: b
    assert _next_job(jobs, pending, None, {"b"}) == 0            # the other worker is on b: take a
    assert _next_job(jobs, pending, "a", {"b"}) == 0             # own group
    assert _next_job(jobs, [2, 3, 4], "a", {"b"}) == 2           # only b left: help out rather than wait


def test_call_logged_captures_output_and_exceptions(tmp_path, capfd):
    def failing():
        print("before the failure")
        raise RuntimeError("boom")

    code, why = _call_logged(failing, str(tmp_path / "a.log"))
    assert (code, why) == (1, "RuntimeError")
    text = (tmp_path / "a.log").read_text()
    assert "before the failure" in text and "RuntimeError: boom" in text and "Traceback" in text
    assert _call_logged(lambda: 3, str(tmp_path / "b.log")) == (3, "")
    print("after")
    assert "after" in capfd.readouterr().out  # the console is back


def test_pool_runs_jobs_in_two_workers_and_reports_the_failure(tmp_path):
    world = tiny.make_world(tmp_path)
    student, teacher = world["weights"]

    def argv(seed, out):
        return ["--root", world["root"], "--seed", str(seed), "--trainer", "PromptKD",
                "--dataset-config-file", "configs/datasets/oxford_pets.yaml",
                "--config-file", "configs/trainers/PromptKD/vit_b16_c2_ep20_batch8_4+4ctx.yaml",
                "--output-dir", str(out), "DATASET.NUM_SHOTS", "0", "MODEL.BACKBONE.WEIGHTS", student,
                "TRAINER.PROMPTKD.TEACHER_WEIGHTS", teacher, "TRAINER.PROMPTKD.TEACHER_ROOT", world["teacher_root"],
                "INPUT.SIZE", "(32,32)", "INPUT.TRANSFORMS", "['normalize']", "OPTIM.MAX_EPOCH", "1",
                "DATALOADER.NUM_WORKERS", "0", "DATALOADER.TRAIN_X.BATCH_SIZE", "4",
                "TRAINER.PROMPTKD.PROMPT_DEPTH_VISION", "2", "TRAINER.PROMPTKD.PROMPT_DEPTH_TEXT", "2",
                teacher_cache.CONFIG_KEY, "True", "USE_CUDA", "False"]

    logs = tmp_path / "logs"
    jobs = [Job("run 1", argv(1, tmp_path / "r1"), logs / "r1.log", group="pets"),
            Job("broken", argv(1, tmp_path / "r2") + ["NO.SUCH_KEY", "1"], logs / "broken.log", group="pets"),
            Job("run 3", argv(3, tmp_path / "r3"), logs / "r3.log", group="pets")]
    messages = []
    with pytest.raises(JobFailed) as info:
        run_train_jobs(jobs, workers=2, threads=1, cwd=REPO, log=messages.append)
    assert "1 benchmark command(s) failed" in str(info.value) and "broken" in str(info.value)
    assert "Unknown config key" in str(info.value)  # the end of its log

    assert [j.returncode for j in jobs] == [0, 2, 0]
    assert sorted(m.split("] ", 1)[1].split(":")[0] for m in messages) == ["broken", "run 1", "run 3"]
    assert any("broken: FAILED (exit 2) in" in m for m in messages)
    assert all(m.startswith(f"  [{i + 1}/3] ") for i, m in enumerate(messages))
    for name in ("r1", "r3"):
        assert json.loads((tmp_path / name / "results.json").read_text())["seed"] == int(name[1])
        log = (logs / f"{name}.log").read_text()
        assert "Results written to" in log and f"Teacher cache ({teacher_cache.CONFIG_KEY})" in log
        # each run's log.txt holds that run only (the tee of the previous run was closed)
        assert (tmp_path / name / "log.txt").read_text().count("Results written to") == 1
    assert "Error:" in (logs / "broken.log").read_text()


def test_train_pool_keeps_its_workers_warm_between_batches(tmp_path):
    """TrainPool reuses the same worker process for a second batch and stops it on close."""
    with TrainPool(workers=1, threads=1, cwd=REPO, log=lambda _: None) as pool:
        first = pool.run([Job(f"help {i}", ["--help"], tmp_path / f"a{i}.log") for i in range(2)])
        pids = sorted(w.process.pid for w in pool._pool)
        second = pool.run([Job("help again", ["--help"], tmp_path / "b.log")])
        assert sorted(w.process.pid for w in pool._pool) == pids
        assert all(w.process.is_alive() for w in pool._pool)
        workers = list(pool._pool)
    assert [j.returncode for j in first + second] == [0, 0, 0]
    assert "usage:" in (tmp_path / "b.log").read_text()
    assert not any(w.process.is_alive() for w in workers)   # closed with the context
