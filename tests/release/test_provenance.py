"""Every revision carries the run's config, data order and token-file manifest; `lmforge data inspect
--release REPO --revision R --step K` rebuilds batch K from them and the local corpus, exactly as
`--run` does, and refuses a corpus that changed."""

from __future__ import annotations

import json
import subprocess

import pytest

from lmforge.cli import main
from lmforge.config import sha256_file
from lmforge.release.errors import ReleaseError
from lmforge.release.provenance import inspect_revision
from lmforge.release.revisions import release_run
from lmforge.train.config import TrainConfig
from lmforge.train.run import train
from tests.train.conftest import run_config, token_dirs  # noqa: F401 - a fixture

pytestmark = pytest.mark.usefixtures("one_thread")


def _show(repo, rev, name):
    return subprocess.run(["git", "-C", str(repo), "show", f"{rev}:training/{name}"], capture_output=True, text=True, check=True).stdout


def test_revisions_carry_the_data_order_and_inspect_rebuilds_a_batch(token_dirs, tmp_path, capsys):  # noqa: F811
    run, repo = tmp_path / "run", tmp_path / "repo"
    train(TrainConfig.from_dict(run_config(token_dirs, run, schedule={"total_steps": 6}, checkpoint={"every": 3, "keep_last": 5})), quiet=True)
    summary = release_run(run, repo, progress=False)
    assert len(summary["revisions"]) == 2
    for rev in summary["revisions"]:
        assert json.loads(_show(repo, rev, "data_order.json")) == json.loads((run / "data_order.json").read_text())
        assert _show(repo, rev, "config.yaml") == (run / "config.yaml").read_text()
        manifest = json.loads(_show(repo, rev, "token_files.json"))
        assert manifest["files"] and all(f["sha256"] == sha256_file(f["path"]) and f["metadata"]["sha256"] == sha256_file(f["metadata"]["path"])
                                         for f in manifest["files"])
    first = summary["revisions"][0]
    ours = list(inspect_revision(repo, first, 2))
    assert main(["data", "inspect", "--run", str(run), "--step", "2", "--jsonl"]) == 0
    from_run = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert ours == from_run and len(ours) == 8 and all(r["doc_ids"] for r in ours)
    assert main(["data", "inspect", "--release", str(repo), "--revision", first, "--step", "2", "--jsonl"]) == 0
    assert [json.loads(line) for line in capsys.readouterr().out.splitlines()] == from_run

    # a corpus that is not the one trained on: one line naming the file
    victim = manifest["files"][0]["path"]
    data = bytearray(open(victim, "rb").read())
    data[-1] ^= 1
    with open(victim, "wb") as f:
        f.write(data)
    try:
        with pytest.raises(ReleaseError, match="differs from the file .* was trained on"):
            list(inspect_revision(repo, first, 2))
        assert main(["data", "inspect", "--release", str(repo), "--revision", first, "--step", "2"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("lmforge: error:") and victim in err and "\n" not in err
    finally:
        data[-1] ^= 1
        with open(victim, "wb") as f:
            f.write(data)
    with pytest.raises(ReleaseError, match="no revision 'step99'"):
        list(inspect_revision(repo, "step99", 2))
