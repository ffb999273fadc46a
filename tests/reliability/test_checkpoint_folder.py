"""The checkpoint folder: atomic saves that clean up after a failed write, stale temp files, one trainer at a time."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from cpabanim.config.typed import ModelConfig
from cpabanim.errors import CpabanimError
from cpabanim.files import temp_path_for
from cpabanim.models import checkpoint
from cpabanim.models.checkpoint import (
    LOCK_NAME,
    hold_checkpoint_folder,
    read_checkpoint,
    remove_stale_temp_files,
    save_checkpoint,
)
from tests.conftest import PROJECT_ROOT
from tests.reliability.helpers import python_child
from tests.services.disks import read_only_folder


def _tiny_model():
    from cpabanim.models.full import AnimationModel

    return AnimationModel(ModelConfig(num_cpab=1, motion="tps"))


def test_a_save_killed_mid_write_leaves_an_orphan_that_the_next_start_removes(tmp_path):
    folder = tmp_path / "ckpt"
    save_checkpoint(folder / "last.pt", _tiny_model(), step=1)
    before = (folder / "last.pt").read_bytes()
    # a child that starts a save and is killed (SIGKILL) while writing its temporary file
    child = python_child(f"""
        import sys, torch
        from cpabanim.models import checkpoint
        def stall(state, handle):
            handle.write(b"partial checkpoint bytes")
            handle.flush()
            print("writing", flush=True)
            sys.stdin.readline()  # killed here, mid-save
        checkpoint.torch.save = stall
        from cpabanim.config.typed import ModelConfig
        from cpabanim.models.full import AnimationModel
        checkpoint.save_checkpoint({str(folder / "last.pt")!r}, AnimationModel(ModelConfig(num_cpab=1, motion="tps")))
    """)
    assert child.stdout.readline().strip() == "writing", child.stderr.read()
    child.send_signal(signal.SIGKILL)
    child.wait()
    orphans = [p for p in folder.iterdir() if p.name != "last.pt"]
    assert [p.name for p in orphans] == [f".last.pt.tmp{child.pid}"]
    assert (folder / "last.pt").read_bytes() == before  # the kill never touched the checkpoint
    # the next trainer's start (under the folder lock) removes it, and nothing else
    with hold_checkpoint_folder(folder):
        assert remove_stale_temp_files(folder) == orphans
    assert sorted(p.name for p in folder.iterdir()) == sorted([LOCK_NAME, "last.pt"])
    assert read_checkpoint(folder / "last.pt")["step"] == 1


@pytest.mark.parametrize(
    ("code", "explained"),
    [(errno.ENOSPC, "no space left"), (errno.EDQUOT, "no space left"), (errno.EROFS, "not writable")],
    ids=["ENOSPC", "EDQUOT", "EROFS"],
)
def test_a_full_or_read_only_disk_during_a_save_removes_the_temp_file_and_names_the_path(
    tmp_path, monkeypatch, code, explained
):
    folder = tmp_path / "ckpt"
    save_checkpoint(folder / "last.pt", _tiny_model(), step=1)
    before = (folder / "last.pt").read_bytes()

    def failing_write(state, handle):
        handle.write(b"the first bytes fit")
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(checkpoint.torch, "save", failing_write)
    with pytest.raises(CpabanimError) as info:
        save_checkpoint(folder / "last.pt", _tiny_model(), step=2)
    message = str(info.value)
    assert str(folder / "last.pt") in message and explained in message and "\n" not in message
    assert sorted(p.name for p in folder.iterdir()) == ["last.pt"]
    assert (folder / "last.pt").read_bytes() == before


def test_a_real_write_failure_of_the_operating_system_leaves_no_temp_file(tmp_path):
    """A file-size limit makes the kernel fail the write (EFBIG), as a full disk would (ENOSPC)."""
    folder = tmp_path / "ckpt"
    child = python_child(f"""
        import resource, signal
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write then fails with EFBIG instead of a signal
        from cpabanim.models.full import AnimationModel
        from cpabanim.models.checkpoint import save_checkpoint
        from cpabanim.errors import CpabanimError
        from cpabanim.config.typed import ModelConfig
        model = AnimationModel(ModelConfig(num_cpab=1, motion="tps"))
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))
        try:
            save_checkpoint({str(folder / "last.pt")!r}, model)
        except CpabanimError as err:
            print("ERROR", err)
    """)
    out, err = child.communicate(timeout=120)
    assert child.returncode == 0, err
    assert out.startswith("ERROR cannot write ") and str(folder / "last.pt") in out
    assert list(folder.iterdir()) == []  # neither a temporary file nor a truncated last.pt


def test_a_read_only_checkpoint_folder_is_one_clear_line(tmp_path):
    with read_only_folder(tmp_path / "ckpt") as folder:
        with pytest.raises(CpabanimError, match="not writable") as info:
            save_checkpoint(folder / "last.pt", _tiny_model())
        assert "\n" not in str(info.value) and str(folder) in str(info.value) and list(folder.iterdir()) == []


def test_temp_files_are_hidden_per_process_and_only_orphans_are_removed(tmp_path):
    tmp = temp_path_for(tmp_path / "last.pt")
    assert tmp.parent == tmp_path and tmp.name == f".last.pt.tmp{os.getpid()}"
    keep = ["last.pt", "last.superseded.pt", ".last.pt.tmpfoo", "notes.tmp1"]
    for name in [*keep, ".last.pt.tmp12345", ".last.superseded.pt.tmp7"]:
        (tmp_path / name).write_bytes(b"x")
    removed = remove_stale_temp_files(tmp_path)
    assert sorted(p.name for p in removed) == [".last.pt.tmp12345", ".last.superseded.pt.tmp7"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(keep)
    assert remove_stale_temp_files(tmp_path / "absent") == []


def test_dvc_ignores_the_temp_and_lock_files_but_not_the_checkpoint():
    dvc = Path(sys.executable).with_name("dvc")
    if not dvc.is_file():
        pytest.skip("dvc is not installed in this environment")
    ignored = [
        "models/checkpoints/.last.pt.tmp4242",
        f"models/checkpoints/{LOCK_NAME}",
        "data/processed/train/.clip#1.tmp",
        "data/processed/.manifest.json.tmp77",
    ]
    kept = ["models/checkpoints/last.pt", "data/processed/train/clip#1", "data/processed/manifest.json"]
    result = subprocess.run(
        [str(dvc), "check-ignore", *ignored, *kept], cwd=PROJECT_ROOT, capture_output=True, text=True
    )
    assert result.stdout.split() == ignored, result.stderr


def test_a_second_trainer_on_the_same_folder_is_refused_naming_the_holder(tmp_path):
    folder = tmp_path / "ckpt"
    holder = python_child(f"""
        import sys
        from cpabanim.models.checkpoint import hold_checkpoint_folder
        with hold_checkpoint_folder({str(folder)!r}):
            print("holding", flush=True)
            sys.stdin.readline()
        print("released", flush=True)
    """)
    try:
        assert holder.stdout.readline().strip() == "holding", holder.stderr.read()
        with pytest.raises(CpabanimError) as info:
            with hold_checkpoint_folder(folder):
                pytest.fail("a second holder got the lock")
        message = str(info.value)
        assert f"pid {holder.pid}" in message and str(folder) in message and "\n" not in message
        # a second process is refused in the same way
        second = python_child(f"""
            from cpabanim.models.checkpoint import hold_checkpoint_folder
            from cpabanim.errors import CpabanimError
            try:
                with hold_checkpoint_folder({str(folder)!r}):
                    print("GOT THE LOCK")
            except CpabanimError as err:
                print("REFUSED", err)
        """)
        out, err = second.communicate(timeout=60)
        assert out.startswith("REFUSED") and f"pid {holder.pid}" in out, err
        holder.stdin.write("\n")
        holder.stdin.flush()
        assert holder.stdout.readline().strip() == "released"
    finally:
        holder.kill()
        holder.wait()
    with hold_checkpoint_folder(folder) as lock:  # free again once the holder let go
        assert lock == folder / LOCK_NAME and lock.read_text().strip() == str(os.getpid())


def test_a_killed_trainer_never_leaves_a_stale_lock(tmp_path):
    folder = tmp_path / "ckpt"
    holder = python_child(f"""
        import sys
        from cpabanim.models.checkpoint import hold_checkpoint_folder
        with hold_checkpoint_folder({str(folder)!r}):
            print("holding", flush=True)
            sys.stdin.readline()
    """)
    assert holder.stdout.readline().strip() == "holding", holder.stderr.read()
    holder.send_signal(signal.SIGKILL)  # kill -9: no clean-up code runs
    holder.wait()
    assert (folder / LOCK_NAME).is_file()  # the file stays; the kernel released the lock with the process
    with hold_checkpoint_folder(folder):
        pass
