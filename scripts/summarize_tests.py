"""Count pytest items and Galaxy tool tests; print 'N passed, N failed' and exit 1 on any failure.

Usage: summarize_tests.py REPORTS_DIR RAN_GALAXY(0|1) LINT_FAILED(0|1|-1: not run) PYTEST_EXIT_CODE CLUSTER_EXIT_CODE
       [NAME...]
The exit codes are pytest's on the core (report REPORTS_DIR/pytest.xml) and on tests/cluster
against the Galaxy on Slurm (REPORTS_DIR/pytest_cluster.xml); -1 where it was not run. NAMEs are
the planemo runs whose reports REPORTS_DIR/tests_NAME.json must exist.
"""

import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path


def pytest_counts(junit: Path) -> tuple[int, int, int]:
    if not junit.is_file():
        return 0, 1, 0  # pytest did not even produce a report
    suites = ET.parse(junit).getroot()
    suite = suites if suites.tag == "testsuite" else suites.find("testsuite")
    total, skipped = int(suite.get("tests")), int(suite.get("skipped"))
    failed = int(suite.get("failures")) + int(suite.get("errors"))
    return total - failed - skipped, failed, skipped


def galaxy_counts(report: Path) -> tuple[int, int, int]:
    if not report.is_file():
        print(f"{report.name}: no report (Galaxy did not start or planemo crashed)")
        return 0, 1, 0
    passed = failed = skipped = 0
    for test in json.loads(report.read_text())["tests"]:
        status = test["data"]["status"]
        if status == "success":
            passed += 1
        elif status == "skip":
            skipped += 1
        else:
            failed += 1
            print(f"FAILED Galaxy test {test['id']}: {status}")
    return passed, failed, skipped


def main() -> int:
    reports, ran_galaxy, lint_failed, pytest_rc, cluster_rc = Path(sys.argv[1]), *map(int, sys.argv[2:6])
    expected_reports = sys.argv[6:]
    passed = failed = skipped = 0
    for name, rc in (("pytest", pytest_rc), ("pytest_cluster", cluster_rc)):
        if rc == -1:
            print(f"{name}: not run")
            continue
        run_passed, run_failed, run_skipped = pytest_counts(reports / f"{name}.xml")
        print(f"{name}: {run_passed} passed, {run_failed} failed, {run_skipped} skipped (exit code {rc})")
        if rc not in (0, 1):  # 1 = some tests failed (counted); anything else = pytest broke
            run_failed = max(run_failed, 1)
        passed, failed, skipped = passed + run_passed, failed + run_failed, skipped + run_skipped
    if ran_galaxy:
        for name in expected_reports:
            gx_passed, gx_failed, gx_skipped = galaxy_counts(reports / f"tests_{name}.json")
            print(f"Galaxy tests of {name}: {gx_passed} passed, {gx_failed} failed, {gx_skipped} skipped")
            passed, failed, skipped = passed + gx_passed, failed + gx_failed, skipped + gx_skipped
        if lint_failed != -1:
            print(f"planemo lint: {'FAILED' if lint_failed else 'clean'}")
            failed += lint_failed
    print(f"{passed} passed, {failed} failed, {skipped} skipped")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
