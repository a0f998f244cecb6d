"""pocketqa.training.runlog: log.jsonl records, resumed logs and the logged loss."""

from __future__ import annotations

import math

import torch

from pocketqa.training.runlog import LOG_FILE, LossMeter, RunLog, read_log


def test_loss_meter_logs_the_mean_per_step_since_the_last_read():
    meter = LossMeter("cpu")
    for step_parts in ([1.0, 2.0], [0.5, 0.5], [4.0, 0.0]):  # two micro-batches a step
        for part in step_parts:
            meter.add(torch.tensor(part, requires_grad=True) * 1)
        meter.end_step()
    assert meter.mean() == (3.0 + 1.0 + 4.0) / 3
    assert meter.steps == 0 and meter.total.item() == 0.0  # read resets
    meter.add(torch.tensor(2.5))
    meter.end_step()
    assert meter.mean() == 2.5
    meter.add(torch.tensor(float("nan")))
    meter.end_step()
    assert math.isnan(meter.mean())  # the loop decides what a nan means


def test_run_log_records_forgets_repeated_steps_and_reads_back(tmp_path):
    log = RunLog(tmp_path / LOG_FILE)
    log.write({"event": "start", "step": 0})
    for step in range(1, 6):
        log(step=step, loss=1.0 / step)
    with open(log.path, "a", encoding="utf-8") as f:
        f.write('{"step": 6, "lo')  # cut off by a kill
    assert log.forget_after(3) == 3
    records = read_log(tmp_path)
    assert [r["step"] for r in records] == [0, 1, 2, 3] and all("time" in r for r in records)
    assert RunLog(None).forget_after(1) == 0
    RunLog(None).write({"step": 1})  # other ranks: a no-op

