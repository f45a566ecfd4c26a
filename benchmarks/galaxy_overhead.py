"""Galaxy's overhead on a dlhisto step: the time from submitting `dlhisto_segment_classic` on the
bundled nuclei image through the API to its outputs being ready (Galaxy's job create and update
times), minus the time of the same command run directly.

Galaxy's part is the job's preparation (command line, working directory), the job script,
collecting the outputs and setting their metadata (in the Celery worker that scripts/lib.sh
starts beside Galaxy; without one, a separate Python process per job). The
jobs run one after another on an otherwise idle Galaxy; the median of --repeats is printed.

Usage (with BioBlend, e.g. planemo's venv): python galaxy_overhead.py GALAXY_URL USER_API_KEY
       [--dlhisto .venv/bin/dlhisto] [--repeats 5] [--json FILE]
"""

import argparse
import json
import statistics
import subprocess
import tempfile
import time
from datetime import datetime
from pathlib import Path

from bioblend.galaxy import GalaxyInstance

REPO = Path(__file__).resolve().parent.parent
IMAGE = REPO / "test-data" / "nuclei.tif"


def core_seconds(dlhisto: str) -> float:
    """Wall time of the step run directly, with the outputs the tool writes."""
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        subprocess.run([dlhisto, "segment_classic", str(IMAGE), "--labels", f"{tmp}/labels.tif",
                        "--measurements", f"{tmp}/m.tsv", "--summary", f"{tmp}/s.tsv"], check=True,
                       capture_output=True)
        return time.perf_counter() - start


def galaxy_seconds(gi: GalaxyInstance, history_id: str, image_id: str) -> float:
    """Submission to the job's last update (outputs collected, metadata set)."""
    run = gi.tools.run_tool(history_id, "dlhisto_segment_classic", {"input": {"src": "hda", "id": image_id}})
    job = gi.jobs.wait_for_job(run["jobs"][0]["id"], maxwait=600, interval=0.5)
    created, updated = (datetime.fromisoformat(job[key]) for key in ("create_time", "update_time"))
    return (updated - created).total_seconds()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("api_key")
    parser.add_argument("--dlhisto", default=str(REPO / ".venv" / "bin" / "dlhisto"))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", help="also write the figures to this JSON file (benchmarks/run)")
    args = parser.parse_args()
    gi = GalaxyInstance(args.url, key=args.api_key)
    history = gi.histories.create_history("dlhisto benchmark: Galaxy overhead")
    upload = gi.tools.upload_file(str(IMAGE), history["id"], file_type="tiff", file_name=IMAGE.name)
    image_id = upload["outputs"][0]["id"]
    gi.datasets.wait_for_dataset(image_id, maxwait=600)
    galaxy_seconds(gi, history["id"], image_id)  # warm-up: the first job loads the tool's dependencies
    core, job = [], []
    for _ in range(args.repeats):  # alternate, so that a slow spell of the machine hits both
        core.append(core_seconds(args.dlhisto))
        job.append(galaxy_seconds(gi, history["id"], image_id))
    gi.histories.delete_history(history["id"], purge=True)
    figures = {"core_s": statistics.median(core), "galaxy_job_s": statistics.median(job)}
    figures["overhead_s"] = figures["galaxy_job_s"] - figures["core_s"]
    print(f"dlhisto_segment_classic on {IMAGE.name}, median of {args.repeats}")
    print(f"{'dlhisto segment_classic run directly':<44} {figures['core_s']:>7.2f} s")
    print(f"{'the same as a Galaxy job (submit to ready)':<44} {figures['galaxy_job_s']:>7.2f} s")
    print(f"{'Galaxy overhead':<44} {figures['overhead_s']:>7.2f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(figures))


if __name__ == "__main__":
    main()
