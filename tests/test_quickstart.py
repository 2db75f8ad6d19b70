"""The main job end to end: `lmforge quickstart --tiny` through every stage (offline: the Python standard
library is the corpus), every artifact checked, then rerun to show that finished stages are skipped
and nothing changes."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PNG = b"\x89PNG\r\n\x1a\n"
STAGES = ("fetch", "tag", "dedup", "mix", "tokenizer", "tokenize", "train", "eval", "release", "generate")


def _run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    return subprocess.run([sys.executable, "-m", "lmforge", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=600)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _balanced(acct: dict) -> bool:
    return acct["read"] == acct["kept"] + sum(acct["dropped"].values()) + sum(acct["malformed"].values())


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout.strip()


def _fingerprint(out: Path) -> dict[str, str]:
    """What a rerun must leave as it was: data, tokens, weights, evaluation, release refs, samples."""
    files = [out / "corpus" / "manifest.json", out / "tokenizer" / "tokenizer.json", out / "eval" / "summary.json",
             out / "eval" / "summary.md", out / "samples.json", out / "train" / "metrics.jsonl"]
    files += sorted((out / "mixed").rglob("*.jsonl.gz")) + sorted((out / "tokens").rglob("*.npy"))
    files += sorted((out / "train" / "checkpoints").rglob("model.safetensors"))
    fp = {str(p.relative_to(out)): _sha(p) for p in files}
    fp["release refs"] = _git(out / "release", "for-each-ref", "--format=%(refname) %(objectname)")
    return fp


def test_packaged_recipe_is_the_configs_recipe():
    """The quickstart reads its recipe from the package (installed non-editable too); it must be the
    documented one in configs/."""
    from lmforge.quickstart import DEFAULT_RECIPE

    assert DEFAULT_RECIPE.read_bytes() == (ROOT / "configs" / "data" / "corpus_quickstart.yaml").read_bytes()


def test_quickstart_flags(tmp_path, capsys):
    from lmforge.cli import build_parser, main

    a = build_parser().parse_args(["quickstart", "--out", "X", "--minutes", "30", "--recipe", "r.yaml", "--workers", "4", "--tiny"])
    assert (a.out, a.minutes, a.recipe, a.workers, a.tiny) == ("X", 30.0, "r.yaml", 4, True)
    a = build_parser().parse_args(["quickstart"])
    assert (a.out, a.minutes, a.recipe, a.workers, a.tiny) == ("runs/quickstart", 15.0, None, 2, False)
    assert main(["quickstart", "--out", str(tmp_path / "q"), "--minutes", "0"]) == 2
    assert "--minutes must be positive" in capsys.readouterr().err
    assert main(["quickstart", "--out", str(tmp_path / "q"), "--recipe", str(tmp_path / "missing.yaml")]) == 2
    assert "no such file" in capsys.readouterr().err


@pytest.mark.slow
def test_quickstart_tiny_end_to_end_and_resume(tmp_path):
    out = tmp_path / "qs"
    r = _run("quickstart", "--tiny", "--out", str(out))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    log = r.stdout
    for i, name in enumerate(STAGES, 1):
        assert f"[{i}/10] {name}:" in log, name
    assert log.count("      done in ") == 10 and "skipped:" not in log
    assert "Where everything is:" in log and "held-out bits per byte" in log

    # --- 1 fetch: the manifest -------------------------------------------------------------------
    m = json.loads((out / "corpus" / "manifest.json").read_text())
    ok = {e["name"]: e for e in m["sources"] if e["status"] == "ok"}
    assert {"stdlib", "stdlib-email"} <= set(ok), m["skipped"]
    for e in ok.values():
        assert e["license"] == "PSF-2.0" and e["bytes"] > 0 and e["documents"] > 0 and e["outputs"]
        assert all(re.fullmatch(r"[0-9a-f]{64}", o["sha256"]) for o in e["outputs"])
    assert m["totals"]["train"]["documents"] == sum(e["documents"] for e in ok.values() if e["split"] == "train")
    assert (out / "corpus" / "heldout" / "code" / "stdlib-email.jsonl.gz").is_file()
    assert not list((out / "corpus" / "documents").rglob("*email*"))  # held out never under documents/

    # --- 2-4 tag, dedup, mix: summaries that add up ------------------------------------------------
    n_docs = m["totals"]["train"]["documents"]
    attrs = out / "corpus" / "attributes"
    for name in ("quality", "bff_duplicate_document", "bff_duplicate_paragraph_spans"):
        s = json.loads((attrs / name / "_summary.json").read_text())
        assert _balanced(s["accounting"]) and s["accounting"]["read"] == n_docs, name
    mixed_read = mixed_kept = 0
    for group_dir in sorted((out / "mixed").iterdir()):
        s = json.loads((group_dir / "mix_summary.json").read_text())
        a = s["accounting"]
        assert _balanced(a), group_dir.name
        assert s["written_documents"] == a["kept"]  # no up-sampling in the quickstart
        mixed_read += a["read"]
        mixed_kept += a["kept"]
    assert mixed_read == n_docs  # every training document went through exactly one rule set
    stages = {n: json.loads(p.read_text()) for n, p in ((p.stem.split("-", 1)[1], p) for p in (out / "stages").glob("*.json"))}
    assert set(stages) == set(STAGES) and all(s["status"] == "done" for s in stages.values())
    mix_stage = stages["mix"]["summary"]
    assert mix_stage["accounting"]["read"] == n_docs and mix_stage["accounting"]["kept"] == mixed_kept and _balanced(mix_stage["accounting"])
    assert mix_stage["pii_masked"].get("email", 0) > 0  # the stdlib has authors' addresses
    from lmforge.data.documents import list_shards, read_documents

    mixed_text = "".join(d.text for s in list_shards(out / "mixed") for d in read_documents(s))
    assert "|||EMAIL_ADDRESS|||" in mixed_text
    from lmforge.data.taggers.pii import find_emails

    assert find_emails(mixed_text) == []  # every address the tagger finds was masked

    # --- 5-6 tokenizer, token files -----------------------------------------------------------------
    import numpy as np

    from lmforge.data.tokenize import read_summary, read_token_file
    from lmforge.tokenizer import Tokenizer

    tok = Tokenizer.from_file(out / "tokenizer" / "tokenizer.json")
    assert tok.vocab_size <= 512 and tok.eos_token_id is not None
    ts = read_summary(out / "tokens" / "train")
    assert ts["documents"] == mixed_kept and _balanced(ts["accounting"])
    eos = total = 0
    for f in ts["files"]:
        ids = read_token_file(out / "tokens" / "train" / f["npy"], ts["dtype"])
        total += len(ids)
        eos += int(np.count_nonzero(np.asarray(ids) == tok.eos_token_id))
        assert int(np.asarray(ids).max()) < tok.vocab_size
    assert total == ts["tokens"] and eos == ts["documents"]

    # --- 7 training: checkpoints, metrics, curves ---------------------------------------------------
    run = out / "train"
    ckpts = sorted(p.name for p in (run / "checkpoints").iterdir() if (p / "COMPLETE").exists())
    assert ckpts == ["step0000004", "step0000008", "step0000012"]
    losses = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in losses if "loss" in r] == list(range(1, 13))
    assert (run / "curves.png").read_bytes()[:8] == PNG and (run / "config.yaml").is_file()

    # --- 8 evaluation: bpb per held-out domain for every checkpoint, tasks on the final one ----------
    ev = json.loads((out / "eval" / "summary.json").read_text())
    assert [r["step"] for r in ev["rows"]] == [4, 8, 12]
    domains = set(ev["rows"][0]["bpb"])
    assert "heldout/code" in domains and all(set(r["bpb"]) == domains for r in ev["rows"])
    assert all(0 < v < 20 for r in ev["rows"] for v in r["bpb"].values())
    assert (out / "eval" / "bpb_vs_tokens.png").read_bytes()[:8] == PNG
    md = (out / "eval" / "summary.md").read_text()
    assert "Downstream tasks on the final checkpoint" in md and "arc_easy" in md
    ds = json.loads((out / "eval" / "final" / "summary.json").read_text())
    assert [r["step"] for r in ds["rows"]] == [12] and ds["rows"][0]["tasks"]["arc_easy"]["n"] == 5

    # --- 9 release: one branch per checkpoint, loadable by stock transformers after a checkout -------
    repo = out / "release"
    branches = set(_git(repo, "for-each-ref", "--format=%(refname:short)", "refs/heads/").split())
    assert branches == {"main", "step4-tokens1024", "step8-tokens2048", "step12-tokens3072"}
    card = (repo / "README.md").read_text()
    for want in ("step4-tokens1024", "step12-tokens3072", "Bits per byte", "arc_easy", "training/curves.png", "eval/bpb_vs_tokens.png", "lmforge quickstart"):
        assert want in card, want
    assert (repo / "LICENSE").is_file() and (repo / "data" / "manifest.json").is_file()
    for png in ("training/curves.png", "eval/bpb_vs_tokens.png"):
        assert (repo / png).read_bytes()[:8] == PNG, png

    import torch
    import transformers

    from lmforge.release import load_pretrained

    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(repo), str(clone)], check=True)
    ids = torch.tensor([tok.encode("def main():\n    return 0\n")])
    for branch, ckpt in (("step4-tokens1024", "step0000004"), ("main", "step0000012")):
        _git(clone, "checkout", "-q", branch)
        hf = transformers.AutoModelForCausalLM.from_pretrained(clone).eval()
        assert type(hf).__name__ == "Olmo2ForCausalLM"
        ours, _ = load_pretrained(run / "checkpoints" / ckpt)
        with torch.no_grad():
            assert torch.allclose(hf(ids).logits, ours.eval()(ids), atol=1e-4), branch
    transformers.AutoTokenizer.from_pretrained(clone)  # the tokenizer files load too

    # --- 10 samples, summary ------------------------------------------------------------------------
    samples = json.loads((out / "samples.json").read_text())["samples"]
    assert {s["domain"] for s in samples} == {p.name for p in (out / "corpus" / "documents").iterdir()}
    for s in samples:
        assert f"[{s['domain']}] {s['prompt']!r} -> {s['completion']!r}" in log
    summary = json.loads((out / "summary.json").read_text())
    assert summary["tokens_trained"] == 12 * 4 * 64 and summary["steps"] == 12
    assert set(summary["stages"]) == set(STAGES) and all(v["seconds"] > 0 for v in summary["stages"].values())
    assert summary["bpb"]["first"]["revision"] == "step4-tokens1024" and summary["bpb"]["final"]["revision"] == "step12-tokens3072"
    assert set(summary["bpb"]["final"]["bpb"]) == {d.split("/", 1)[1] for d in domains}
    assert summary["revisions"] == ["step4-tokens1024", "step8-tokens2048", "step12-tokens3072"]

    # --- rerun: every stage is skipped, nothing changes ------------------------------------------------
    before = _fingerprint(out)
    r2 = _run("quickstart", "--tiny", "--out", str(out))
    assert r2.returncode == 0, r2.stdout[-3000:] + r2.stderr[-3000:]
    assert r2.stdout.count("finished earlier") == 10 and "done in" not in r2.stdout
    for s in samples:  # the samples are printed again
        assert f"[{s['domain']}] {s['prompt']!r} -> {s['completion']!r}" in r2.stdout
    assert _fingerprint(out) == before
    rerun = json.loads((out / "summary.json").read_text())
    assert all(v["skipped_this_run"] for v in rerun["stages"].values())
    assert rerun["bpb"] == summary["bpb"] and rerun["stages"]["train"]["seconds"] == summary["stages"]["train"]["seconds"]

    # --- a stage whose record is gone is redone, with the same result (seeded sampling) ---------------
    (out / "stages" / "10-generate.json").unlink()
    r3 = _run("quickstart", "--tiny", "--out", str(out))
    assert r3.returncode == 0, r3.stderr[-3000:]
    assert r3.stdout.count("finished earlier") == 9 and "[10/10] generate" in r3.stdout
    assert json.loads((out / "samples.json").read_text())["samples"] == samples
