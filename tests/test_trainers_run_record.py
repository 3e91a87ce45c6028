"""trainers/run_record.py: what a distillation run measured, and the results entries built from it."""
import pytest

from trainers.run_record import RunRecord


def test_base2novel_entries_and_best_epoch():
    record = RunRecord("base2novel")
    for epoch, base in ((1, 60.0), (2, 80.0), (3, 80.0)):
        record.add(epoch, "val", base)
    assert record.best_epoch == 2  # the earliest of equal bests, as the engine keeps model-best
    assert record.missing(3) == ["test"]
    record.add(3, "test", 40.0)
    entry = record.entry(3)
    assert entry == {"epoch": 3, "base": 80.0, "new": 40.0, "hm": pytest.approx(2 * 80 * 40 / 120, abs=1e-4)}
    with pytest.raises(ValueError, match="not evaluated on \\['test'\\]"):
        record.entry(2)


def test_cross_scores_val_and_test_as_one_set():
    record = RunRecord("cross")
    record.add(1, "val", 55.0)
    assert record.get(1, "test") == 55.0 and record.missing(1) == []
    assert record.entry(1) == {"epoch": 1, "accuracy": 55.0}


def test_state_round_trip_and_protocol_check():
    record = RunRecord("base2novel")
    record.add(1, "val", 70.0)
    record.add(1, "test", 30.0)
    again = RunRecord("base2novel")
    again.load_state_dict(record.state_dict())
    assert again.val_by_epoch == {1: 70.0} and again.get(1, "test") == 30.0
    with pytest.raises(ValueError, match="protocol"):
        RunRecord("cross").load_state_dict(record.state_dict())
    with pytest.raises(ValueError, match="split"):
        record.add(1, "train", 1.0)
