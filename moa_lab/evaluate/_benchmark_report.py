"""What ``moa-lab eval`` made (:func:`moa_lab.evaluate._benchmark.run_benchmark`): the files written, the rows of a
checkable set, the scores of a judged one, and how they print."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from moa_lab.evaluate._mt_bench import mt_bench_lines


@dataclass
class BenchmarkReport:
    """What :func:`run_benchmark` made: the files written, and for a checkable set the ``rows`` (one per way of
    answering: ``config``, ``accuracy`` in percent, its ``interval``, ``p`` against the single model, ``maj``:
    maj@k accuracy per k)."""

    kind: str
    outdir: Path
    questions: int
    files: dict[str, Path] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)
    failed: int = 0
    scores: dict[str, Any] | None = None  # MT-Bench's grades, when judged

    def __str__(self) -> str:
        again = " (run again with retry_failed / --retry-failed to retry them)" if self.failed else ""
        head = f"{self.kind}: {self.questions} question(s), {self.failed} failed run(s){again}; files: " + ", ".join(
            f"{name} {path}" for name, path in self.files.items()
        )
        if self.scores is not None and "win_rate" in self.scores:  # AlpacaEval, judged here
            s = self.scores
            if s["win_rate"] is None:
                return f"{head}\nno instruction judged in both orders ({s['unjudged']})"
            low, high = s["interval"]
            return (
                f"{head}\nwin rate vs the baseline (this judge, not AlpacaEval's): {s['win_rate']:.1f}% [{low:.1f}, "
                f"{high:.1f}], length-controlled {s['length_controlled']:.1f}%, p = {s['p']:.3g} against 50%; "
                f"{s['judged']} judged, {s['unjudged']} without a verdict in both orders"
            )
        if self.scores is not None:
            return "\n".join([head, *mt_bench_lines(self.scores)])
        if not self.rows:
            return head
        ks = list(self.rows[0]["maj"])
        lines = [head, "", "config | accuracy % [95% interval] | p vs single | " + " | ".join(f"maj@{k}" for k in ks)]
        for row in self.rows:
            low, high = row["interval"] or (float("nan"), float("nan"))
            p = "—" if row["p"] is None else f"{row['p']:.3g}"
            maj = " | ".join(f"{row['maj'][k]:.1f}" for k in ks)
            lines.append(f"{row['config']} | {row['accuracy']:.1f} [{low:.1f}, {high:.1f}] | {p} | {maj}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "questions": self.questions,
            "failed": self.failed,
            "files": {name: str(path) for name, path in self.files.items()},
            "rows": self.rows,
            "scores": self.scores,
        }
