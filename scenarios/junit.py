"""JUnit XML of a batch, as CI systems read it: one ``testsuite`` per profile, one
``testcase`` per run, ``failure`` (an assertion failed), ``error`` (the call could not be
placed or judged) or ``skipped``."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections import defaultdict

from scenarios.runner import RunResult


def junit_xml(results: list[RunResult]) -> str:
    suites = ET.Element("testsuites", name="scenarios")
    by_profile: dict[str, list[RunResult]] = defaultdict(list)
    for result in results:
        by_profile[result.label.split("/", 1)[0]].append(result)
    for profile, runs in by_profile.items():
        suite = ET.SubElement(
            suites,
            "testsuite",
            name=f"scenarios.{profile}",
            tests=str(len(runs)),
            failures=str(sum(r.status == "failed" for r in runs)),
            errors=str(sum(r.status == "error" for r in runs)),
            skipped=str(sum(r.status == "skipped" for r in runs)),
            time=f"{sum(r.duration_s for r in runs):.3f}",
        )
        for run in runs:
            name = run.label.split("/", 1)[-1] + (
                f"[{run.repeat_index + 1}]" if run.repeat_index else ""
            )
            case = ET.SubElement(
                suite,
                "testcase",
                classname=f"scenarios.{profile}",
                name=name,
                time=f"{run.duration_s:.3f}",
            )
            details = "\n".join(
                [f"{c.status.upper()} {c.check}: {c.message}" for c in run.checks]
                + [f"note: {n}" for n in run.notes]
                + ([f"call: {run.call_id}"] if run.call_id else [])
            )
            if run.status == "failed":
                failed = run.failed_checks
                element = ET.SubElement(
                    case, "failure", message=f"{failed[0].check}: {failed[0].message}"[:500]
                )
                element.text = details
            elif run.status == "error":
                element = ET.SubElement(case, "error", message=run.error[:500])
                element.text = details
            elif run.status == "skipped":
                ET.SubElement(case, "skipped", message=run.error[:500])
            if details:
                ET.SubElement(case, "system-out").text = details
    ET.indent(suites)
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"
    )
