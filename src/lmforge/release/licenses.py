"""The LICENSE file of a released model repository, for an SPDX license id.

    text = license_text("apache-2.0")   # lmforge's own Apache-2.0 text (installed distribution or checkout)
    text = license_text("mit", holder="Me", year=2025)

Apache-2.0 comes from lmforge's own distribution or the system's common-licenses, MIT from a
template, others from ``/usr/share/common-licenses`` or a pointer to the SPDX page.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

__all__ = ["license_text"]

_MIT = """MIT License

Copyright (c) {year} {holder}

Permission is hereby granted, free of charge, to any person obtaining a copy
of this software and associated documentation files (the "Software"), to deal
in the Software without restriction, including without limitation the rights
to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all
copies or substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
SOFTWARE.
"""

# SPDX id (lower case, as the Hub writes it) -> file name under /usr/share/common-licenses (Debian)
_COMMON = {
    "apache-2.0": "Apache-2.0", "gpl-2.0": "GPL-2", "gpl-3.0": "GPL-3", "lgpl-2.1": "LGPL-2.1", "lgpl-3.0": "LGPL-3",
    "mpl-2.0": "MPL-2.0", "cc0-1.0": "CC0-1.0", "gfdl-1.3": "GFDL-1.3", "artistic-2.0": "Artistic",
}


def _lmforge_apache() -> str | None:
    """lmforge's own LICENSE (Apache-2.0), from its installed distribution."""
    try:
        from importlib.metadata import PackageNotFoundError, distribution

        dist = distribution("lmforge")
        for name in ("licenses/LICENSE", "LICENSE"):
            text = dist.read_text(name)
            if text and "Apache License" in text[:400] and "Version 2.0" in text[:400]:
                return text
    except (PackageNotFoundError, OSError):
        pass
    src = Path(__file__).resolve().parents[3] / "LICENSE"  # a source checkout
    if src.is_file():
        text = src.read_text(encoding="utf-8")
        if "Apache License" in text[:400] and "Version 2.0" in text[:400]:
            return text
    return None


def license_text(license: str, *, holder: str = "the authors", year: int | None = None) -> str:
    """The text of the LICENSE file for an SPDX license id (case-insensitive)."""
    lid = license.strip().lower()
    if lid == "mit":
        return _MIT.format(year=year or _dt.date.today().year, holder=holder)
    if lid == "apache-2.0":
        text = _lmforge_apache()
        if text:
            return text if text.endswith("\n") else text + "\n"
    common = Path("/usr/share/common-licenses") / _COMMON.get(lid, "")
    if lid in _COMMON and common.is_file():
        return common.read_text(encoding="utf-8")
    return (
        f"This model is released under the license with SPDX identifier {license}.\n"
        f"The full text is at https://spdx.org/licenses/{license}.html\n"
    )
