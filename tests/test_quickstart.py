"""The main job end to end: `lmforge quickstart --tiny` through every stage (offline: the Python standard
library is the corpus), every artifact checked, then rerun to show that finished stages are skipped
and nothing changes. Before it: the typed settings, the packaged mix rules and tiny recipe, and the
timing model with its re-planning fed made-up step times (no real slowdown needed)."""

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


def test_config_modes():
    from lmforge.config import ConfigError
    from lmforge.quickstart import QuickstartConfig

    tiny, default = QuickstartConfig.tiny(), QuickstartConfig.default(30)
    assert tiny.fixed_steps and (tiny.steps, tiny.checkpoints, tiny.model.d_model, tiny.tokens_per_step) == (12, [4, 8, 12], 32, 4 * 64)
    assert not default.fixed_steps and default.minutes == 30.0 and default.train_settings()["checkpoint_fractions"][-1] == 1.0
    assert "steps" in tiny.train_settings() and "minutes" not in tiny.train_settings() and "minutes" in default.train_settings()
    with pytest.raises(ConfigError, match="exactly one"):
        QuickstartConfig.from_dict({"steps": 10, "checkpoints": [10]})  # and the default minutes
    with pytest.raises(ConfigError, match="--minutes must be positive"):
        QuickstartConfig.default(0)


def test_mix_rules_and_tiny_recipe_ship_as_yaml(tmp_path):
    """The packaged rule groups are the quickstart's filters (the mixed output depends on nothing else)."""
    from lmforge.corpus.fetch import load_recipe
    from lmforge.corpus.mixer import MixRule, pii_span_edits
    from lmforge.quickstart import TINY_RECIPE
    from lmforge.quickstart.mix import load_mix_groups, marker_settings, mix_configs

    q = "quality__"
    common = [
        MixRule(attribute="bff_duplicate_document", reduce="count", op=">", value=0, action="drop", name="duplicate document"),
        MixRule(attribute="bff_duplicate_paragraph_spans", reduce="fraction", op=">", value=0.5, action="drop", name="mostly repeated paragraphs"),
    ]
    want = {
        "text": common + [
            MixRule(attribute=q + "gopher_quality__passes", reduce="score", op=">=", value=1, action="keep", name="gopher quality"),
            MixRule(attribute=q + "gopher_repetition__duplicate_line_char_fraction", op=">", value=0.2, name="gopher repetition: lines"),
            MixRule(attribute=q + "gopher_repetition__duplicate_paragraph_char_fraction", op=">", value=0.2, name="gopher repetition: paragraphs"),
        ],
        "code": common + [MixRule(attribute=q + "code__symbol_density", op=">", value=0.25, name="symbol density > 0.25")],
    }
    groups = load_mix_groups()
    assert {g: c.rules for g, c in groups.items()} == want
    assert all(c.attributes == ["quality", "bff_duplicate_document", "bff_duplicate_paragraph_spans"] for c in groups.values())
    cfgs = mix_configs(tmp_path / "corpus", tmp_path / "mixed", ["books", "tech"], [], workers=3)
    assert list(cfgs) == ["text"] and cfgs["text"].documents == [str(tmp_path / "corpus" / "documents" / d) for d in ("books", "tech")]
    assert cfgs["text"].output == str(tmp_path / "mixed" / "text") and cfgs["text"].workers == 3
    assert cfgs["text"].span_edits == pii_span_edits("quality") and cfgs["text"].rules == want["text"]
    marker = marker_settings(cfgs["text"])  # as markers recorded it before the rules were YAML: old run directories resume
    assert list(marker) == ["documents", "attributes", "output", "rules", "span_edits"] and repr(marker["rules"][0]["value"]) == "0"

    recipe, _ = load_recipe(TINY_RECIPE)
    assert recipe.name == "quickstart-tiny" and [s.name for s in recipe.sources] == ["stdlib", "idle-docs", "stdlib-email", "idle-news2x"]
    assert recipe.sources[1].options == {"split": "\\n\\n(?=\\S)"} and [s.split for s in recipe.sources].count("heldout") == 2


# --- the timing model and re-planning (no real slowdown: a fake clock and a fake trainer) ------------
FRACTIONS = [0.125, 0.25, 0.5, 0.75, 1.0]


class _Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class _Trainer:
    """What TimeBudget touches of a Trainer: step, max_steps, the schedule, the config, the run dir."""

    def __init__(self, step: int, max_steps: int, run_dir: Path):
        from types import SimpleNamespace

        from lmforge.optim import ScheduleConfig

        self.step, self.max_steps, self.run_dir = step, max_steps, run_dir
        self.module = SimpleNamespace(schedule=ScheduleConfig(kind="cosine", warmup_steps=30, total_steps=max_steps))
        self.config = {"schedule": {"total_steps": max_steps}, "trainer": {"max_steps": max_steps}}


def _plan(tmp_path, step_s: float = 0.5, budget: float = 500.0):
    """A plan as calibration makes it: 30 calibration steps, then ``budget`` seconds at ``step_s``."""
    from lmforge.quickstart.timing import AfterTraining, TrainingPlan, checkpoint_steps

    after = AfterTraining(eval_tokens=60_000, tokens_per_step=4096)
    steps = 30 + int(budget / step_s)
    cks = checkpoint_steps(steps, FRACTIONS, [30])
    plan = TrainingPlan(steps=steps, checkpoints=cks, tokens_per_step=4096, calibrated=True, seconds_per_step=step_s, budget_seconds=budget,
                        reserved_after_seconds=round(after.seconds(step_s, len(cks)), 1), checkpoint_seconds={"30": 0.0})
    return plan, after


def _train(budget, trainer, clock, seconds_of_step, saved: list[int] | None = None) -> float:
    """Run the fake training: each step takes ``seconds_of_step(step)``; the steps a SaveAtSteps
    would save go to ``saved``; returns the training seconds."""
    t0 = clock.t
    budget.on_start(trainer)
    while trainer.step < trainer.max_steps:
        clock.t += seconds_of_step(trainer.step + 1)
        trainer.step += 1
        if saved is not None and trainer.step in budget.saver.steps:
            saved.append(trainer.step)
        budget.on_step_end(trainer)
    return clock.t - t0


def _budget(tmp_path, plan, after, clock, say=None):
    from lmforge.quickstart.timing import TimeBudget
    from lmforge.train.callbacks import SaveAtSteps

    saver = SaveAtSteps(plan.checkpoints)
    return TimeBudget(plan, tmp_path / "quickstart_plan.json", after, fractions=FRACTIONS, min_steps=60, saver=saver, clock=clock,
                      say=say or (lambda m: None)), saver


def test_plan_from_calibration():
    from lmforge.quickstart.timing import STEP_OVERHEAD, AfterTraining, calibrated_step_seconds, plan_steps

    times = {s: (9.0 if s <= 5 else 0.5 + 0.01 * (s % 3)) for s in range(1, 31)}  # the first 5 steps are not timed
    assert calibrated_step_seconds(times, 99.0, 30) == pytest.approx(0.51 * STEP_OVERHEAD)
    assert calibrated_step_seconds({}, 30.0, 30) == pytest.approx(1.0 * STEP_OVERHEAD)
    after = AfterTraining(eval_tokens=60_000, tokens_per_step=4096)
    plan = plan_steps(seconds_per_step=0.5, spent_seconds=100.0, minutes=15, calibration_steps=30, fractions=FRACTIONS,
                      tokens_per_step=4096, after=after)
    reserve = after.seconds(0.5, 6)
    assert plan.budget_seconds == pytest.approx(900 - 100 - reserve, abs=0.1) and plan.steps == 30 + int(plan.budget_seconds / 0.5)
    assert plan.checkpoints[0] == 30 and plan.checkpoints[-1] == plan.steps and len(plan.checkpoints) == 6
    assert after.seconds(1.0, 6) > reserve  # the stages after training slow down with the machine


def test_time_budget_keeps_the_plan_on_an_idle_machine(tmp_path):
    import math

    plan, after = _plan(tmp_path)
    clock = _Clock()
    budget, saver = _budget(tmp_path, plan, after, clock)
    trainer = _Trainer(30, plan.steps, tmp_path)
    # a slow start-up of the process (not timed), then 2% jitter: not a slowdown
    _train(budget, trainer, clock, lambda s: 3.0 if s <= 33 else 0.5 * (1 + 0.02 * math.sin(s)))
    assert trainer.max_steps == 1030 and plan.steps == 1030 and plan.replans == [] and trainer.module.schedule.total_steps == 1030
    assert saver.steps == plan.checkpoints and "replans" not in json.loads((tmp_path / "quickstart_plan.json").read_text())


def test_time_budget_moves_the_end_earlier_when_training_slows_down(tmp_path):
    from lmforge.quickstart.timing import REPLAN_SLACK_FRACTION, TrainingPlan

    plan, after = _plan(tmp_path)
    total = plan.budget_seconds + plan.reserved_after_seconds
    (tmp_path / "config.yaml").write_text("old\n")
    clock, said = _Clock(), []
    budget, saver = _budget(tmp_path, plan, after, clock, said.append)
    trainer = _Trainer(30, plan.steps, tmp_path)
    saved = [30]
    seconds = _train(budget, trainer, clock, lambda s: 0.5 if s <= 300 else 1.0, saved)  # twice as slow from step 300 on
    end = trainer.max_steps
    assert 300 < end < 1030 and plan.replans and plan.replans[0]["steps_before"] == 1030 and plan.replans[-1]["steps_after"] == end
    # on time: training + the stages after it (at the slow speed) end within the slack of the budget, not much earlier
    finish = seconds + after.seconds(1.0, len(plan.checkpoints))
    assert total - 30 <= finish <= total + REPLAN_SLACK_FRACTION * total, (finish, total)
    # the schedule's decay ends at the new end; checkpoints: those saved before the slowdown, fractions of the new end after
    assert trainer.module.schedule.total_steps == end == plan.steps and trainer.config["schedule"]["total_steps"] == end
    assert saver.steps == plan.checkpoints == saved and saved[:3] == [30, 129, 258] and saved[-1] == end
    assert all(c <= end for c in plan.checkpoints) and "re-plan at step" in said[0]
    assert f"total_steps: {end}" in (tmp_path / "config.yaml").read_text()
    on_disk = TrainingPlan.read(tmp_path / "quickstart_plan.json")
    assert on_disk.replans == plan.replans and on_disk.steps == end and on_disk.checkpoints == plan.checkpoints

    # a resumed run counts on from its checkpoint's training seconds, and keeps the moved end
    resumed_at = plan.checkpoints[-2]
    clock2 = _Clock()
    budget2, _ = _budget(tmp_path, on_disk, after, clock2)
    trainer2 = _Trainer(resumed_at, on_disk.steps, tmp_path)
    budget2.on_start(trainer2)
    assert budget2.base == on_disk.checkpoint_seconds[str(resumed_at)] > 0


def test_time_budget_never_ends_before_the_minimum(tmp_path):
    plan, after = _plan(tmp_path)
    clock = _Clock()
    budget, _ = _budget(tmp_path, plan, after, clock)
    trainer = _Trainer(30, plan.steps, tmp_path)
    _train(budget, trainer, clock, lambda s: 0.5 if s <= 35 else 50.0)  # a hundred times slower
    assert trainer.max_steps == 60 and trainer.step == 60


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
    from lmforge.corpus.taggers.pii import find_emails

    assert find_emails(mixed_text) == []  # every address the tagger finds was masked

    # --- 5-6 tokenizer, token files -----------------------------------------------------------------
    import numpy as np

    from lmforge.data.token_files import read_summary, read_token_file
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
    gold = json.loads((out / "eval" / "gold_bpb" / "summary.json").read_text())  # a generative task's gold bpb, every checkpoint
    assert [r["step"] for r in gold["rows"]] == [4, 8, 12]
    assert all(0 < r["tasks"]["naturalqs_open:bpb"]["primary"] < 20 and r["tasks"]["naturalqs_open:bpb"]["n"] == 5 for r in gold["rows"])
    assert (out / "eval" / "gold_bpb" / "gold_bpb_vs_tokens.png").read_bytes()[:8] == PNG

    # --- 9 release: one branch per checkpoint, loadable by stock transformers after a checkout -------
    repo = out / "release"
    branches = set(_git(repo, "for-each-ref", "--format=%(refname:short)", "refs/heads/").split())
    assert branches == {"main", "step4-tokens1024", "step8-tokens2048", "step12-tokens3072"}
    card = (repo / "README.md").read_text()
    for want in ("step4-tokens1024", "step12-tokens3072", "Bits per byte", "arc_easy", "training/curves.png", "eval/bpb_vs_tokens.png", "lmforge quickstart"):
        assert want in card, want
    assert (repo / "LICENSE").is_file() and (repo / "data" / "manifest.json").is_file()
    # every revision carries the data order and the token-file manifest (checksums of every file)
    manifest = json.loads(_git(repo, "show", "step4-tokens1024:training/token_files.json"))
    assert manifest["files"] and all(f["sha256"] and f["metadata"]["sha256"] for f in manifest["files"])
    assert json.loads(_git(repo, "show", "step4-tokens1024:training/data_order.json")) == json.loads((run / "data_order.json").read_text())
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


# --- killed during training, then a changed setting ------------------------------------------------
# Run by `python -c`: the quickstart as `lmforge quickstart` runs it, with one change each.
_PAUSE_AFTER_FIRST_CHECKPOINT = """
import sys, time
from lmforge.train import callbacks
_on_step_end = callbacks.SaveAtSteps.on_step_end
def on_step_end(self, trainer):
    _on_step_end(self, trainer)
    if trainer.step == self.steps[0]:  # the first checkpoint is complete: hold still until killed
        print("paused after the first checkpoint", flush=True)
        time.sleep(600)
callbacks.SaveAtSteps.on_step_end = on_step_end
from lmforge.cli import main
sys.exit(main(sys.argv[1:]))
"""
_TOKENIZER_VOCAB_384 = """
import sys
from lmforge.quickstart.config import QuickstartConfig
_tiny = QuickstartConfig.tiny.__func__
QuickstartConfig.tiny = classmethod(lambda cls: cls.from_dict({**_tiny(cls).to_dict(), "vocab_size": 384}))
from lmforge.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _stage_log(stdout: str) -> dict[str, str]:
    """The log of each stage of a quickstart run, by stage name."""
    parts = re.split(r"^\[\d+/10\] (\w+):", stdout, flags=re.M)
    return {parts[i]: parts[i + 1] for i in range(1, len(parts) - 1, 2)}


def _markers(out: Path) -> dict[str, dict]:
    return {p.stem.split("-", 1)[1]: json.loads(p.read_text()) for p in (out / "stages").glob("*.json")}


@pytest.mark.slow
def test_quickstart_killed_during_training_resumes_and_a_changed_setting_reruns_what_follows(tmp_path):
    """SIGKILL during the train stage (right after its first checkpoint; the child holds still there
    so the kill lands mid-stage on any machine): the rerun skips the finished stages and continues
    training from that checkpoint. Then a setting only the tokenizer stage reads (vocab_size)
    changes: tokenizer and every stage after it run again, fetch/tag/dedup/mix are skipped."""
    import signal
    import time

    out = tmp_path / "qs"
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    first = out / "train" / "checkpoints" / "step0000004"
    with open(tmp_path / "killed.log", "w") as log:
        proc = subprocess.Popen([sys.executable, "-c", _PAUSE_AFTER_FIRST_CHECKPOINT, "quickstart", "--tiny", "--out", str(out)],
                                stdout=log, stderr=subprocess.STDOUT, env=env)  # fmt: skip
        try:
            deadline = time.monotonic() + 300
            while not (first / "COMPLETE").is_file():
                assert proc.poll() is None, (tmp_path / "killed.log").read_text()[-3000:]
                assert time.monotonic() < deadline, "no first checkpoint after 300 s"
                time.sleep(0.05)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    killed = (tmp_path / "killed.log").read_text()
    assert "[7/10] train:" in killed and "[8/10]" not in killed
    markers = _markers(out)
    assert [markers[s]["status"] for s in STAGES[:6]] == ["done"] * 6 and markers["train"]["status"] == "running"
    assert set(markers) == set(STAGES[:7])
    assert sorted(p.name for p in (out / "train" / "checkpoints").iterdir() if (p / "COMPLETE").exists()) == ["step0000004"]
    step4 = _sha(first / "model.safetensors")

    # --- the same command again: finished stages skipped, training continues from step 4 --------------
    r = _run("quickstart", "--tiny", "--out", str(out))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    log = _stage_log(r.stdout)
    assert list(log) == list(STAGES)
    assert all("finished earlier" in log[s] for s in STAGES[:6]), r.stdout[-3000:]
    assert "resuming an interrupted run of this stage" in log["train"]
    assert re.search(r"resumed from \S*step0000004 at step 4\b", log["train"]), log["train"]
    assert "[step  4/12]" not in log["train"] and "[step  5/12]" in log["train"]  # steps 1-4 are not trained again
    assert all("done in" in log[s] for s in STAGES[6:])
    run = out / "train"
    assert sorted(p.name for p in (run / "checkpoints").iterdir() if (p / "COMPLETE").exists()) == ["step0000004", "step0000008", "step0000012"]
    assert _sha(first / "model.safetensors") == step4  # kept, not redone
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == list(range(1, 13))  # each step once
    assert all(m["status"] == "done" for m in _markers(out).values()) and set(_markers(out)) == set(STAGES)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 12 and summary["tokens_trained"] == 12 * 4 * 64
    assert summary["revisions"] == ["step4-tokens1024", "step8-tokens2048", "step12-tokens3072"]
    assert [r["step"] for r in json.loads((out / "eval" / "summary.json").read_text())["rows"]] == [4, 8, 12]
    assert (out / "samples.json").is_file()

    # --- a setting only the tokenizer stage reads changes: it and every stage after it run again ------
    before = _markers(out)
    r = subprocess.run([sys.executable, "-c", _TOKENIZER_VOCAB_384, "quickstart", "--tiny", "--out", str(out)],
                       capture_output=True, text=True, env=env, timeout=600)  # fmt: skip
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    log = _stage_log(r.stdout)
    skipped = {s for s in STAGES if "finished earlier" in log[s]}
    redone = {s for s in STAGES if "done in" in log[s]}
    assert skipped == {"fetch", "tag", "dedup", "mix"} and redone == set(STAGES[4:]), (skipped, redone)
    after = _markers(out)
    assert all(after[s]["id"] == before[s]["id"] for s in ("fetch", "tag", "dedup", "mix"))
    assert all(after[s]["id"] != before[s]["id"] for s in STAGES[4:])
    assert after["tokenizer"]["settings"] == {"vocab_size": 384} and before["tokenizer"]["settings"] == {"vocab_size": 512}
    from lmforge.tokenizer import Tokenizer

    assert Tokenizer.from_file(out / "tokenizer" / "tokenizer.json").vocab_size <= 384
    assert "resumed from" not in log["train"]  # trained from scratch: the old run directory was removed
    assert _sha(first / "model.safetensors") != step4
    assert "vocab_size: 384" in (run / "config.yaml").read_text()
    assert json.loads((out / "summary.json").read_text())["steps"] == 12
