"""The one output-location policy (ldb_hpc.io.files.check_output_location) and its callers' messages."""

from __future__ import annotations

import os

import pytest

from ldb_hpc.errors import OutputError
from ldb_hpc.io.files import check_output_location, prepare_output


def test_output_location_policy(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "there.h5").write_text("x")
    (tmp_path / "adir").mkdir()
    check_output_location("new.h5")
    check_output_location("there.h5")  # overwrite by default: only the location is checked
    check_output_location("there.h5", overwrite=True)
    with pytest.raises(OutputError, match=r"^output exists: there.h5 \(pass --overwrite to replace it\)$"):
        check_output_location("there.h5", overwrite=False)
    with pytest.raises(OutputError, match=f"^output is a directory: {tmp_path / 'adir'}$"):
        check_output_location("adir")
    with pytest.raises(OutputError, match=f"^output directory does not exist: {tmp_path / 'nope'}$"):
        check_output_location("nope/x.h5")


def test_unwritable_folder(tmp_path):
    """A folder without write permission. Root writes anywhere, so as root (CI) the check runs as `nobody`
    (setpriv; it may read and traverse, not write) in a subprocess."""
    import subprocess
    import sys

    os.chmod(tmp_path, 0o755)
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        if os.geteuid() == 0:
            code = ("from ldb_hpc.errors import OutputError\nfrom ldb_hpc.io.files import check_output_location\n"
                    f"try:\n    check_output_location({str(ro / 'x.h5')!r})\nexcept OutputError as e:\n"
                    "    print(e)\n")
            proc = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                                   "--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search", sys.executable,
                                   "-c", code], capture_output=True, text=True, timeout=120,
                                  env={**os.environ, "HOME": str(tmp_path)})
            assert proc.stdout.strip() == f"output directory is not writable: {ro}", proc.stderr
        else:
            with pytest.raises(OutputError, match=f"^output directory is not writable: {ro}$"):
                check_output_location(str(ro / "x.h5"))
    finally:
        ro.chmod(0o700)


def test_prepare_output_names_the_absolute_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "there.h5").write_text("x")
    with pytest.raises(OutputError, match=f"^output exists: {tmp_path / 'there.h5'} "):
        prepare_output("there.h5", overwrite=False)
    tmp = prepare_output("there.h5", overwrite=True)
    assert os.path.dirname(tmp) == str(tmp_path) and os.path.basename(tmp).startswith(".there.h5.tmp.")
