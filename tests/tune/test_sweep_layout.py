"""The experiment folder's layout (Ray's files under ray/), spent checkpoints and sizes (no Ray)."""

from __future__ import annotations

import json

import pytest

from entropic_tune import metrics as M
from entropic_tune.errors import UserError
from entropic_tune.tune.layout import (
    HISTORY_FILE,
    delete_checkpoints,
    folder_size,
    format_size,
    ray_dir,
    saved_history,
    size_line,
)


def test_rays_folder_is_ray_and_an_older_folder_with_rays_files_at_the_top_is_refused(tmp_path):
    assert ray_dir(tmp_path / "new") == tmp_path / "new" / "ray"  # before anything exists
    old = tmp_path / "old"
    old.mkdir()
    (old / "experiment_state-2026.json").write_text("{}")
    with pytest.raises(UserError, match=r"old: Ray's files are at the top of the folder") as info:
        ray_dir(old)  # not resumed as a new folder (its trials would run again from the start)
    assert "\n" not in str(info.value)
    (old / "ray").mkdir()
    assert ray_dir(old) == old / "ray"


def test_only_the_checkpoint_folders_of_the_given_trials_are_deleted(tmp_path):
    done, failed = tmp_path / "ray" / "grpo-s0-a", tmp_path / "ray" / "grpo-s1-b"
    for trial in (done, failed):
        for name in ("checkpoint_000000", "checkpoint_000001"):
            (trial / name).mkdir(parents=True)
            (trial / name / "trainer.pt").write_bytes(b"x" * 1000)
        (trial / "progress.csv").write_text("step\n1\n")
    assert delete_checkpoints([done]) == 2000
    assert sorted(p.name for p in done.iterdir()) == ["progress.csv"]
    assert len(list(failed.glob("checkpoint_*"))) == 2  # an errored trial keeps them for --resume
    assert folder_size(tmp_path) == 2 * 1000 + 2 * len("step\n1\n")


def test_sizes_read_as_du_si():
    assert [format_size(n) for n in (0, 999, 1000, 1234, 25_400_000, 123_456_789, 3_210_000_000)] == \
        ["0 B", "999 B", "1.0 kB", "1.2 kB", "25.4 MB", "123 MB", "3.2 GB"]


def test_the_size_line_names_rays_part_and_what_was_deleted(tmp_path):
    (tmp_path / "ray").mkdir()
    (tmp_path / "ray" / "tuner.pkl").write_bytes(b"x" * 1500)
    (tmp_path / "summary.csv").write_bytes(b"y" * 500)
    assert size_line(tmp_path) == "folder size: 2.0 kB (ray/: 1.5 kB)"
    assert size_line(tmp_path, deleted=True).endswith(
        "; checkpoints of finished trials deleted (--keep-checkpoints keeps them)")


def _rows(n: int) -> list[dict[str, float]]:
    return [{M.STEP: k, M.ENTROPY: 1.0 / k} for k in range(1, n + 1)]


def test_the_saved_rows_are_the_newest_checkpoints_and_survive_its_deletion(tmp_path):
    trial = tmp_path / "grpo-s0-a"
    assert saved_history(trial) is None and saved_history(None) is None
    for index, steps in ((0, 2), (1, 4), (2, 6)):
        (trial / f"checkpoint_00000{index}").mkdir(parents=True)
        (trial / f"checkpoint_00000{index}" / HISTORY_FILE).write_text(json.dumps(_rows(steps)))
    (trial / "checkpoint_000003").mkdir()  # written by a killed trial: no rows (yet), skipped
    (trial / "checkpoint_000003" / HISTORY_FILE).write_text('[{"step": 1')
    assert saved_history(trial) == _rows(6)
    delete_checkpoints([trial])
    assert sorted(p.name for p in trial.iterdir()) == [HISTORY_FILE]
    assert saved_history(trial) == _rows(6)


def test_rays_rows_and_the_saved_rows_merge_by_step_with_the_saved_ones_winning():
    from entropic_tune.tune.collect import _history

    # Ray's progress.csv rows as collect._progress reads them (numeric cells as floats); step 2 twice
    ray_rows = [{M.STEP: step, M.ENTROPY: h} for step, h in ((1.0, 9.0), (2.0, 8.0), (2.0, 2.5), (5.0, 0.2))]
    assert [r[M.STEP] for r in _history(ray_rows)] == [1, 2, 5]
    assert _history(ray_rows)[1][M.ENTROPY] == 2.5  # the last report of a step
    merged = _history(ray_rows, _rows(4))
    assert [r[M.STEP] for r in merged] == [1, 2, 3, 4, 5]
    assert [r[M.ENTROPY] for r in merged] == [1.0, 0.5, 1 / 3, 0.25, 0.2]
    assert _history([], _rows(2)) == _rows(2) and _history([]) == []
