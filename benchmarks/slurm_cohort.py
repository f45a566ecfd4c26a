"""A cohort of slides through Galaxy on Slurm: the wall time of the `he_slide_nuclei_classic`
workflow over 1, 2 and 4 slides, and a paper estimate for 100 slides on a 10-node cluster.

Each slide is one invocation of the workflow, all submitted at once, as Galaxy's batch mode
over a collection does; the wall time runs from the first submission to the last job's end.
The slide is the real Aperio SVS region of the tests (test-data/cmu_small_region.svs, 2220 x
2967 px at 0.499 um), uploaded once per slide. The Galaxy must send the dlhisto tools to Slurm
(benchmarks/run starts scripts/slurm.sh and such a Galaxy); the ideal is a flat time per slide
until the node's job slots are full. The estimate scales the core-seconds a slide took when the
node was full (4 slides) to the cluster's cores, and to whole slides by their area.

Usage (with BioBlend, e.g. planemo's venv): python slurm_cohort.py GALAXY_URL USER_API_KEY ADMIN_API_KEY
       [--slides 1,2,4] [--nodes 10] [--cores-per-node 32] [--slide-gigapixels 2] [--json FILE]
"""

import argparse
import json
import math
import os
import subprocess
import time
from datetime import datetime
from pathlib import Path

import yaml
from bioblend.galaxy import GalaxyInstance

REPO = Path(__file__).resolve().parent.parent
SLIDE = REPO / "test-data" / "cmu_small_region.svs"
SLIDE_MEGAPIXELS = 2220 * 2967 / 1e6
REFERENCE = REPO / "test-data" / "he.jpg"
WORKFLOW = REPO / "workflows" / "he_slide_nuclei_classic.yml"


def upload(gi: GalaxyInstance, history_id: str, path: Path, file_type: str) -> str:
    dataset = gi.tools.upload_file(str(path), history_id, file_type=file_type, file_name=path.name)["outputs"][0]
    gi.datasets.wait_for_dataset(dataset["id"], maxwait=600)
    return dataset["id"]


def cohort_seconds(gi: GalaxyInstance, admin: GalaxyInstance, workflow_id: str, slides: int) -> tuple[float, list[str]]:
    """Wall time of the workflow over this many slides, submitted at once; the jobs' Slurm ids
    (which only an admin sees)."""
    history_id = gi.histories.create_history(f"dlhisto benchmark: {slides} slides on Slurm")["id"]
    reference = upload(gi, history_id, REFERENCE, "jpg")
    slide_ids = [upload(gi, history_id, SLIDE, "svs") for _ in range(slides)]
    start = time.time()
    invocations = [gi.workflows.invoke_workflow(workflow_id, history_id=history_id, inputs_by="name", inputs={
        "slide": {"src": "hda", "id": slide_id}, "stain_reference": {"src": "hda", "id": reference}})["id"]
        for slide_id in slide_ids]
    jobs = []
    for invocation_id in invocations:
        gi.invocations.wait_for_invocation(invocation_id, maxwait=3600)
        jobs += [gi.jobs.wait_for_job(job["id"], maxwait=3600) for job in gi.jobs.get_jobs(invocation_id=invocation_id)]
    end = max(datetime.fromisoformat(job["update_time"]).timestamp() for job in jobs)
    external = [admin.jobs.show_job(job["id"], full_details=True)["external_id"] for job in jobs]
    gi.histories.delete_history(history_id, purge=True)
    return end - start, external


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("api_key")
    parser.add_argument("admin_key")
    parser.add_argument("--slides", default="1,2,4")
    parser.add_argument("--nodes", type=int, default=10)
    parser.add_argument("--cores-per-node", type=int, default=32)
    parser.add_argument("--slide-gigapixels", type=float, default=2.0,
                        help="a whole slide's area at the workflow's resolution (40x scan read at 0.5 um: about 2)")
    parser.add_argument("--json", help="also write the figures to this JSON file (benchmarks/run)")
    args = parser.parse_args()
    if not os.environ.get("SLURM_CONF"):
        parser.error("SLURM_CONF is not set: this measures a Galaxy that runs its jobs on Slurm")
    gi = GalaxyInstance(args.url, key=args.api_key)
    workflow_id = gi.workflows.import_workflow_dict(yaml.safe_load(WORKFLOW.read_text()))["id"]
    cores = os.cpu_count()
    figures = {"cores": cores, "slide_megapixels": SLIDE_MEGAPIXELS, "runs": {}}
    print(f"{WORKFLOW.stem} over N copies of {SLIDE.name} ({SLIDE_MEGAPIXELS:.1f} Mpx), "
          f"one Slurm node of {cores} cores")
    print(f"{'slides':>6} {'wall s':>8} {'s per slide':>12} {'Slurm jobs':>11}")
    for slides in map(int, args.slides.split(",")):
        seconds, slurm_jobs = cohort_seconds(gi, GalaxyInstance(args.url, key=args.admin_key), workflow_id, slides)
        accounted = subprocess.run(["sacct", "-n", "-X", "-P", "-o", "JobID", "-j", ",".join(slurm_jobs)],
                                   capture_output=True, text=True, check=True).stdout.split()
        assert sorted(accounted) == sorted(slurm_jobs), "every job of the cohort ran on Slurm"
        figures["runs"][slides] = {"seconds": seconds, "slurm_jobs": len(slurm_jobs)}
        print(f"{slides:>6} {seconds:>8.1f} {seconds / slides:>12.1f} {len(slurm_jobs):>11}")
    full = max(figures["runs"])
    core_seconds = figures["runs"][full]["seconds"] * cores / full  # per slide, with the node full
    single = figures["runs"][min(figures["runs"])]["seconds"]
    cluster_cores = args.nodes * args.cores_per_node
    waves = math.ceil(100 / cluster_cores)
    region = max(single, 100 * core_seconds / cluster_cores)
    scale = args.slide_gigapixels * 1000 / SLIDE_MEGAPIXELS
    whole = max(single * scale, 100 * core_seconds * scale / cluster_cores)
    figures.update(core_seconds_per_slide=core_seconds, estimate_region_s=region, estimate_whole_slides_s=whole,
                   nodes=args.nodes, cores_per_node=args.cores_per_node, slide_gigapixels=args.slide_gigapixels)
    print(f"\none slide costs {core_seconds:.0f} core-seconds with the node full ({full} slides on {cores} cores)")
    print(f"paper estimate, 100 slides on {args.nodes} nodes x {args.cores_per_node} cores ({waves} wave(s) of jobs):")
    print(f"  regions like this one: {region / 60:.1f} min (at best one slide's time, {single:.0f} s)")
    print(f"  whole slides of {args.slide_gigapixels:g} Gpx ({scale:.0f}x this region's area, time taken as "
          f"proportional to area, one core per job): {whole / 3600:.1f} h")
    if args.json:
        Path(args.json).write_text(json.dumps(figures))


if __name__ == "__main__":
    main()
