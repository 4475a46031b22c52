"""How the command line prints an analytic estimate: the run summary's table, then what
only the analytic tier says (its fidelity and what bounds per-user speed)."""

from __future__ import annotations

from cluster.results.summary import format_summary

FIDELITIES = ("event", "analytic")


def format_estimate(summary: dict) -> str:
    """`format_summary`'s table of an estimate, with its fidelity and bound after it."""
    lines = [format_summary(summary), f"  {'fidelity':<24} {summary.get('fidelity')}"]
    if summary.get("bound"):
        lines.append(f"  {'bound':<24} {summary['bound']}")
    return "\n".join(lines)
