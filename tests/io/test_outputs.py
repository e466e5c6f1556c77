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
