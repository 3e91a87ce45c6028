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


def test_agreement_selects_the_earliest_best_epoch_and_travels_through_the_state():
    record = RunRecord("base_only")
    assert record.agreement_epoch is None
    for epoch, base, new, agreement in ((1, 60.0, 20.0, 50.0), (2, 70.0, 30.0, 75.0), (3, 80.0, 40.0, 75.0)):
        record.add(epoch, "val", base)
        record.add(epoch, "test", new)
        record.add_agreement(epoch, agreement)
    assert record.agreement_epoch == 2  # ties: the earliest, as model-agreement is replaced on strict gains
    assert record.selected_entry(2) == {**record.entry(2), "agreement": 75.0}
    with pytest.raises(ValueError, match="no recorded agreement"):
        RunRecord("base2novel").selected_entry(1)
    again = RunRecord("base_only")
    again.load_state_dict(record.state_dict())
    assert again.agreement_by_epoch == {1: 50.0, 2: 75.0, 3: 75.0} and again.agreement_epoch == 2
    old_state = {k: v for k, v in record.state_dict().items() if k != "agreement"}  # saved before the option
    older = RunRecord("base_only")
    older.load_state_dict(old_state)
    assert older.agreement_by_epoch == {} and older.val_by_epoch == record.val_by_epoch
