"""Stage 9, release: every checkpoint exported to HF format as a branch ``stepN-tokensM`` of a git
model repository, ``main`` = the final model + model card (``lmforge.release``)."""

from __future__ import annotations

import dataclasses
from typing import Any

from lmforge.quickstart.common import Context, summary_fields

__all__ = ["ReleaseSummary", "run"]


@dataclasses.dataclass
class ReleaseSummary:
    repo: str
    revisions: list[str]  # stepN-tokensM, by step
    main: str  # the revision main points at
    card: str

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ReleaseSummary:
        return cls(**summary_fields(cls, data))

    def describe(self) -> str:
        return f"{len(self.revisions)} revisions ({', '.join(self.revisions)}); main = {self.main}"

    def revision_of_step(self) -> dict[int, str]:
        """step -> revision name (read by the parser release names them with)."""
        from lmforge.release import parse_revision

        out = {}
        for name in self.revisions:
            parsed = parse_revision(name)
            if parsed is not None:
                out[parsed[0]] = name
        return out


def run(ctx: Context) -> ReleaseSummary:
    repo = ctx.paths.release
    reproduce = " ".join(ctx.command)

    def fn() -> ReleaseSummary:
        from lmforge.release import release_run

        r = release_run(ctx.paths.run, repo, eval_dir=ctx.paths.eval, manifest=ctx.paths.corpus / "manifest.json",
                        reproduce=reproduce, name=ctx.name, progress=ctx.progress)
        return ReleaseSummary(repo=r["repo"], revisions=r["revisions"], main=r["main"]["revision"], card=str(repo / "README.md"))

    return ctx.runner.run("release", f"every checkpoint -> HF format, a branch stepN-tokensM of the git repository {ctx.paths.rel(repo)}/ "
                          "(main = final + model card)", fn, settings={"name": ctx.name, "reproduce": reproduce}, deps=("train", "eval", "fetch"),
                          outputs=[repo], describe=ReleaseSummary.describe, summary_type=ReleaseSummary,
                          intact=lambda: (repo / ".git").is_dir())
