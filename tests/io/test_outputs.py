"""The output policy: outputs never replace inputs (through symlinks), existing outputs need --overwrite."""

from __future__ import annotations

import pytest

from dunemap.errors import DunemapError
from dunemap.io.outputs import OutputExistsError, OutputIsInputError, check_outputs


def test_new_output_is_accepted(tmp_path):
    src = tmp_path / "in.tif"
    src.write_bytes(b"x")
    check_outputs([tmp_path / "out.tif", None], [src])


def test_output_equal_to_input_is_refused_even_with_overwrite(tmp_path):
    src = tmp_path / "in.tif"
    src.write_bytes(b"x")
    with pytest.raises(OutputIsInputError, match="would overwrite the input"):
        check_outputs([src], [src], overwrite=True)


def test_output_through_symlink_to_input_is_refused(tmp_path):
    src = tmp_path / "model.pth"
    src.write_bytes(b"x")
    link = tmp_path / "link.tif"
    link.symlink_to(src)
    with pytest.raises(OutputIsInputError):
        check_outputs([link], [src], overwrite=True)


def test_existing_output_needs_overwrite(tmp_path):
    out = tmp_path / "out.tif"
    out.write_bytes(b"old")
    with pytest.raises(OutputExistsError, match="--overwrite") as info:
        check_outputs([out])
    assert isinstance(info.value, DunemapError) and isinstance(info.value, FileExistsError)
    check_outputs([out], overwrite=True)
    check_outputs([out], resume=True)
    assert out.read_bytes() == b"old"


def test_folder_given_for_a_file_output_is_refused(tmp_path):
    with pytest.raises(OutputExistsError, match="is a folder"):
        check_outputs([tmp_path], overwrite=True)


def test_run_folder_rules(tmp_path):
    run = tmp_path / "run"
    check_outputs([], folders=[run])  # absent: fine
    run.mkdir()
    check_outputs([], folders=[run])  # empty: fine
    (run / "best_model.pth").write_bytes(b"w")
    with pytest.raises(OutputExistsError, match="already holds files"):
        check_outputs([], folders=[run])
    check_outputs([], folders=[run], overwrite=True)
    with pytest.raises(OutputIsInputError, match="holds the input"):
        check_outputs([], [run / "best_model.pth"], folders=[run], overwrite=True)


# ---- locks, temporary files, work folders, publishing a set -------------------------------------------------

import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

from dunemap.io.outputs import (  # noqa: E402
    OutputLock, OutputLockedError, OutputWriteError, claim_outputs, clean_temp_files, lock_path, publish,
    staged_outputs, work_folder)


def test_lock_refuses_a_second_holder_naming_its_pid(tmp_path):
    out = tmp_path / "map.tif"
    code = (f"from dunemap.io.outputs import OutputLock\nimport time\nl = OutputLock({str(out)!r}).acquire()\n"
            "print('held', flush=True)\ntime.sleep(60)\n")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(OutputLockedError, match=rf"map\.tif: another dunemap run \(pid {holder.pid}\)"):
            OutputLock(out).acquire()
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    assert lock_path(out).read_text().strip() == str(holder.pid)  # stale: its holder is dead
    with OutputLock(out):  # taken over
        assert lock_path(out).read_text().strip() == str(os.getpid())
    assert not lock_path(out).exists()


def test_a_run_folder_reached_through_a_link_meets_the_same_lock(tmp_path):
    """mkdir R; ln -s R L: ``train --save-dir L`` must be refused while ``train --save-dir R`` runs (real CLI)."""
    real, link = tmp_path / "R", tmp_path / "L"
    real.mkdir()
    link.symlink_to(real, target_is_directory=True)
    with OutputLock(real):  # the first run holds its run folder
        proc = subprocess.run([sys.executable, "-m", "dunemap", "train", "--data-root", str(tmp_path / "none"),
                               "--save-dir", str(link), "--overwrite"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert f"{link}: another dunemap run (pid {os.getpid()})" in proc.stderr and "Traceback" not in proc.stderr
    assert real.is_dir() and not any(real.iterdir())  # nothing of the second run


def test_lock_is_reentrant_in_one_process(tmp_path):
    out = tmp_path / "x.tif"
    with OutputLock(out), OutputLock(out):
        assert lock_path(out).exists()
    assert not lock_path(out).exists()


def test_lock_in_an_unwritable_place_is_one_error(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputWriteError, match="cannot create its folder"):
        OutputLock(tmp_path / "file" / "out.tif").acquire()
    with pytest.raises(OutputWriteError, match="too long"):
        OutputLock(tmp_path / ("n" * 252)).acquire()


def test_temp_files_of_killed_runs_are_cleaned_under_the_lock(tmp_path):
    out = tmp_path / "stats.csv"
    left = [tmp_path / ".stats.a1b2c3d4.tmp.csv", tmp_path / ".stats.zz99yy88.tmp.json"]
    keep = [tmp_path / ".stats.x.a1b2c3d4.tmp.csv", tmp_path / "stats.csv.bak", tmp_path / ".other.a1b2c3d4.tmp.csv"]
    for p in left + keep:
        p.write_text("x")
    assert sorted(clean_temp_files(out)) == sorted(left)
    assert all(p.exists() for p in keep)


def test_work_folder_is_never_a_symlink(tmp_path):
    target = tmp_path / "target"
    target.mkdir()
    (tmp_path / "w.partial").symlink_to(target)
    with pytest.raises(OutputWriteError, match="symbolic link"):
        work_folder(tmp_path / "w.partial")
    assert work_folder(tmp_path / "real.partial").is_dir()


def test_publish_removes_the_old_primary_first_and_stale_companions(tmp_path):
    primary, companion, stale = tmp_path / "m.tif", tmp_path / "m_confidence.tif", tmp_path / "m_probabilities.tif"
    for p in (primary, companion, stale):
        p.write_bytes(b"old")
    new_c, new_p = tmp_path / "c.new", tmp_path / "p.new"
    new_c.write_bytes(b"new c")
    new_p.write_bytes(b"new p")
    publish([(new_c, companion), (new_p, primary)], stale=[stale, None])
    assert primary.read_bytes() == b"new p" and companion.read_bytes() == b"new c" and not stale.exists()


def test_staged_outputs_publish_on_success_and_leave_nothing_on_error(tmp_path):
    a, b = tmp_path / "s.json", tmp_path / "s.csv"
    with staged_outputs(a, b) as (ta, tb):
        ta.write_text("j")
        tb.write_text("c")
    assert a.read_text() == "j" and b.read_text() == "c"
    with pytest.raises(RuntimeError):
        with staged_outputs(a, b) as (ta, tb):
            ta.write_text("J")
            raise RuntimeError("boom")
    assert a.read_text() == "j" and sorted(p.name for p in tmp_path.iterdir()) == ["s.csv", "s.json"]


def test_claim_checks_after_locking(tmp_path):
    src = tmp_path / "in.tif"
    src.write_bytes(b"x")
    with pytest.raises(OutputIsInputError):
        with claim_outputs([src], [src], overwrite=True):
            pass
    assert not lock_path(src).exists()
