"""A calibration file is read as written or refused naming the file: the default constant
stands in only where no file exists (before the first `wafersim calibrate`)."""

import json
from pathlib import Path

import pytest

from common.calibration import read_calibrated
from common.errors import CalibrationError, ConfigError


def test_missing_file_gives_the_default(tmp_path):
    """No file yet: the documented fallback."""
    assert read_calibrated(tmp_path / "calibration.json", "k", 2.5) == 2.5


def test_a_good_file_gives_its_constant(tmp_path):
    path = tmp_path / "calibration.json"
    path.write_text(json.dumps({"constants": {"k": 3}}))
    assert read_calibrated(path, "k", 2.5) == 3.0


@pytest.mark.parametrize("text, says", [
    ("{not json", "not a JSON calibration file"),
    ("[1, 2]", "no constants.k"),
    (json.dumps({"constants": {}}), "no constants.k"),
    (json.dumps({"fit": {}}), "no constants.k"),
    (json.dumps({"constants": {"k": "fast"}}), "must be a finite number"),
    (json.dumps({"constants": {"k": None}}), "must be a finite number"),
    (json.dumps({"constants": {"k": True}}), "must be a finite number"),
])
def test_a_broken_file_is_an_error_naming_it(tmp_path, text, says):
    """Unparsable, without the constant, or not a number: a ConfigError naming the file."""
    path = tmp_path / "calibration.json"
    path.write_text(text)
    with pytest.raises(CalibrationError, match=says) as info:
        read_calibrated(path, "k", 2.5)
    assert str(path) in str(info.value)
    assert isinstance(info.value, ConfigError)


def test_an_unreadable_file_is_an_error_naming_it(tmp_path, monkeypatch):
    """A permission error (made here, since root reads any file) is refused, naming the file."""
    path = tmp_path / "calibration.json"
    path.write_text(json.dumps({"constants": {"k": 3}}))

    def denied(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(self))
    monkeypatch.setattr(Path, "read_text", denied)
    with pytest.raises(CalibrationError, match="cannot read") as info:
        read_calibrated(path, "k", 2.5)
    assert str(path) in str(info.value)


def test_a_folder_in_its_place_is_an_error_naming_it(tmp_path):
    """What cannot be read as a file (here a folder) is refused, not taken for a fresh fit."""
    path = tmp_path / "calibration.json"
    path.mkdir()
    with pytest.raises(CalibrationError, match="cannot read") as info:
        read_calibrated(path, "k", 2.5)
    assert str(path) in str(info.value)
