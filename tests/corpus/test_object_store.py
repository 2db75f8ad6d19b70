"""Object-store paths: a real S3-compatible server (moto's server mode) on 127.0.0.1, every stage
reading and writing ``s3://`` URLs end to end, with outputs equal byte for byte to the same stages
on local paths; a rerun resumes from the done-markers in the bucket; plans and the Ray executor too."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lmforge.corpus.dedup import DedupConfig, dedup
from lmforge.corpus.mixer import MixerConfig, mix
from lmforge.corpus.taggers import tag
from lmforge.corpus.tokenize import TokenizeConfig, tokenize
from lmforge.data.documents import Document, list_shards, read_documents, write_documents
from lmforge.objectstore import RemotePath, as_path
from tests.conftest import corpus_lines
from tests.faults._harness import digest_tree

pytest.importorskip("s3fs", reason="s3:// paths need s3fs (pip install 'lmforge[s3]')")
moto_server = pytest.importorskip("moto.server", reason="the S3-compatible test server is moto's (pip install 'moto[server]')")
pytestmark = [pytest.mark.required_in_ci, pytest.mark.slow]

BUCKET = "lmforge-test"


@pytest.fixture(scope="module")
def s3():
    """An S3 server on 127.0.0.1 (a random port), its endpoint and fake credentials in the
    environment (subprocesses and Ray workers inherit them) and in fsspec's configuration."""
    import boto3
    import fsspec

    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    assert host == "127.0.0.1"
    endpoint = f"http://{host}:{port}"
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1", "FSSPEC_S3_ENDPOINT_URL": endpoint}
    saved = {k: os.environ.get(k) for k in env}
    saved_conf = fsspec.config.conf.get("s3")
    os.environ.update(env)
    fsspec.config.conf["s3"] = {"endpoint_url": endpoint}
    try:
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=BUCKET)
        yield endpoint
    finally:
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
        if saved_conf is None:
            fsspec.config.conf.pop("s3", None)
        else:
            fsspec.config.conf["s3"] = saved_conf
        server.stop()


@pytest.fixture(scope="module")
def docs():
    lines = corpus_lines(800, seed=11)
    out = [Document(id=f"d{i}", text="\n".join(lines[i * 5 : i * 5 + 5]), source="web" if i % 3 else "books") for i in range(150)]
    out += [Document(id=f"copy{i}", text=out[i].text, source="web") for i in range(0, 150, 7)]
    return out


def _write_corpus(root, docs) -> None:
    for k in range(3):
        write_documents(as_path(root) / "documents" / f"part{k}.jsonl.gz", docs[k::3])


def _stages(root: str, tokens: str, tokenizer: Path, workers: int = 1, executor=None) -> dict:
    """tag, dedup (each mode), mix, tokenize with ROOT, the mix output and the token files at these paths."""
    docs = f"{root}/documents"
    acct = tag(docs, ["gopher_quality", "pii"], "q", workers=workers, progress=False, executor=executor)
    assert acct.balanced and acct.read == acct.kept
    for mode in ("documents", "paragraphs", "ngrams", "minhash"):
        assert dedup(DedupConfig(documents=[docs], mode=mode, name=f"dd_{mode}", buckets=2, workers=workers), progress=False,
                     executor=executor).balanced
    m = MixerConfig.from_dict({"documents": [docs], "attributes": ["q", "dd_documents"], "output": f"{root}/mixed", "workers": workers,
                               "rules": [{"attribute": "dd_documents", "reduce": "count", "op": ">", "value": 0, "action": "drop"}]})
    s = mix(m, progress=False, executor=executor)
    assert s["accounting"]["balanced"] and s["accounting"]["dropped"]
    return tokenize(TokenizeConfig(documents=[f"{root}/mixed/documents"], tokenizer=str(tokenizer), out=tokens, workers=workers),
                    progress=False, executor=executor)


def _download(url: str, dest: Path) -> Path:
    remote = RemotePath(url)
    for obj in remote.rglob("*"):
        target = dest / obj.relative_to(remote)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(obj.read_bytes())
    return dest


def _token_files(root: Path, prefix: str) -> dict[str, bytes]:
    """Token files, their metadata with the input paths (which name where they were) made relative."""
    import gzip

    out = {}
    for f in sorted(root.glob("part-*")):
        data = gzip.decompress(f.read_bytes()) if f.name.endswith(".gz") else f.read_bytes()
        out[f.name] = data.replace(prefix.encode(), b"ROOT")
    return out


SKIP = lambda rel: "/_shards/" in rel or "_done/" in rel or rel.endswith(("mix_config.yaml", "_summary.json", "mix_summary.json"))  # noqa: E731


def test_every_stage_on_s3_equals_the_same_stages_on_local_paths(s3, docs, tmp_path, bpe_tokenizer):
    tok = tmp_path / "tok.json"
    bpe_tokenizer.save(tok)
    local = tmp_path / "local"
    _write_corpus(local, docs)
    _stages(str(local), str(local / "tokens"), tok)
    root = f"s3://{BUCKET}/a/corpus"
    _write_corpus(root, docs)
    assert [str(s) for s in list_shards(f"{root}/documents")] == [f"{root}/documents/part{k}.jsonl.gz" for k in range(3)]
    s = _stages(root, f"s3://{BUCKET}/a/tokens", tok, workers=2)
    assert s["shards_skipped"] == 0 and s["accounting"]["balanced"]
    got = _download(f"s3://{BUCKET}/a", tmp_path / "from-s3")
    want = digest_tree(local, skip=SKIP)
    assert digest_tree(got / "corpus", skip=SKIP) == {k: v for k, v in want.items() if not k.startswith("tokens/")}
    assert _token_files(got / "tokens", root) == _token_files(local / "tokens", str(local))
    assert not list(RemotePath(f"s3://{BUCKET}/a").rglob("*.tmp")) and not any(".dedup-work" in str(p) for p in RemotePath(f"s3://{BUCKET}/a").rglob("*"))
    # a rerun resumes from the done-markers in the bucket: nothing tokenized twice
    again = tokenize(TokenizeConfig(documents=[f"{root}/mixed/documents"], tokenizer=str(tok), out=f"s3://{BUCKET}/a/tokens"), progress=False)
    assert again["shards_skipped"] == again["shards"] == 3


def test_the_cli_a_plan_and_ray_on_s3(s3, docs, tmp_path, bpe_tokenizer):
    """``lmforge data ...`` in a fresh process (its endpoint from FSSPEC_S3_ENDPOINT_URL), a plan run
    task by task, and the Ray executor's workers, all on s3:// paths."""
    pytest.importorskip("ray")
    from tests.corpus.test_executors import run_plan

    tok = tmp_path / "tok.json"
    bpe_tokenizer.save(tok)
    root = f"s3://{BUCKET}/b/corpus"
    _write_corpus(root, docs)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LMFORGE_CRASH")}
    r = subprocess.run([sys.executable, "-m", "lmforge", "data", "tag", "--documents", f"{root}/documents", "--taggers", "gopher_quality",
                        "--experiment", "q", "--no-progress"], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "read 172; kept 172" in r.stdout
    assert sorted(p.name for p in RemotePath(f"{root}/attributes/q").iterdir()) == ["_summary.json", *[f"part{k}.jsonl.gz" for k in range(3)]]
    ran = run_plan(tmp_path / "plan" / "plan.json", ["dedup", "--documents", f"{root}/documents", "--mode", "paragraphs", "--buckets", "2"])
    assert ran == 3 + 2 + 3
    from lmforge.corpus.executors import ExecutorConfig

    t = tokenize(TokenizeConfig(documents=[f"{root}/documents"], tokenizer=str(tok), out=f"s3://{BUCKET}/b/tokens", workers=2), progress=False,
                 executor=ExecutorConfig(executor="ray"))
    assert t["accounting"]["balanced"] and t["tokens"] > 0
    local = tmp_path / "local"
    _write_corpus(local, docs)
    tag(str(local / "documents"), ["gopher_quality"], "q", progress=False)
    dedup(DedupConfig(documents=[str(local / "documents")], mode="paragraphs"), progress=False)
    tokenize(TokenizeConfig(documents=[str(local / "documents")], tokenizer=str(tok), out=str(local / "tokens")), progress=False)
    got = _download(f"s3://{BUCKET}/b", tmp_path / "from-s3")
    assert digest_tree(got / "corpus", skip=SKIP) == digest_tree(local, skip=lambda rel: SKIP(rel) or rel.startswith("tokens/"))
    assert _token_files(got / "tokens", root) == _token_files(local / "tokens", str(local))


def test_object_store_paths_read_back_and_fail_in_one_line(s3, tmp_path):
    url = f"s3://{BUCKET}/c/documents/x.jsonl.zst"
    write_documents(url, [Document(id="1", text="zstd in a bucket")])
    assert [d.text for d in read_documents(url)] == ["zstd in a bucket"]
    from lmforge.data.documents import DataError

    with pytest.raises(DataError, match=f"s3://{BUCKET}/c/nothing: no such object or prefix"):
        list_shards(f"s3://{BUCKET}/c/nothing")
    with pytest.raises(TypeError, match="object-store path"):  # never mistaken for a local file
        open(RemotePath(url))  # noqa: SIM115
    with pytest.raises(ImportError, match="notaprotocol"):
        RemotePath("notaprotocol://b/x").exists()
