"""The main job: the U-Net workflow on bundled annotated images and the histology workflow on a
real scanner slide, in a running Galaxy (BioBlend).

Creates (or reuses) a local user, imports every workflow of workflows/ into the user's
workflow list, uploads the four annotated quadrants of test-data/nuclei.tif into a new history,
runs `nuclei_unet` (train a U-Net on quadrants 1-3, predict and evaluate quadrant 4), downloads
the scores and the evaluation report, publishes the history and takes screenshots of it and of
the report with headless Chromium. Then, in a second history, runs `he_slide_cell_types` on
the real Aperio SVS (test-data/cmu_small_region.svs, fetched by scripts/fetch_test_slides.py)
with the pretrained H&E models from the model base (nuclei, their types, the tissue map),
downloads the typed nuclei, the tissue map, their QuPath GeoJSON and the counts per type and
region, and draws the nuclei in their types' colours over a region of the slide
(scripts/overlay.py); last, it opens the workflow's viewer from the history as a user would
(scripts/viewer_screenshot.py) and takes its pictures: the whole slide, and the dermis. Between
the two, dlhisto's pretrained models go into the model base (its data manager), and the
fluorescence nuclei model is applied to the held-out quadrant (which it never trained or tuned
on) and scored.

Usage: python run_in_galaxy.py GALAXY_URL ADMIN_KEY OUTPUT_DIR
"""

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml
from bioblend.galaxy import GalaxyInstance

SHIPPED = ("nuclei_fluorescence", "nuclei_he", "nuclei_types_he", "tissue_he")
"""dlhisto's pretrained models (dlhisto_core/models/shipped.py), installed into the model base."""

USER_EMAIL = "demo@dlhisto.local"
USER_NAME = "demo"
USER_PASSWORD = "dlhisto-demo"
REPO = Path(__file__).resolve().parent.parent
WORKFLOW = "nuclei_unet"
TRAINING, HELD_OUT = ("q1", "q2", "q3"), ("q4",)
VIEWER_ZOOM = ("1206", "1526", "1.5")
"""Where the demo's second viewer picture looks, and the object it clicks: a large nucleus of the
Aperio slide's dermis (x, y), 1.5 screen pixels per slide pixel."""


def warm_up(gi: GalaxyInstance) -> None:
    """One upload, waited for, before any other: the Celery worker's threads configure Galaxy's
    SQLAlchemy mappers on first use, and two first uploads at once can race there (the upload's
    job then stays queued for ever; see warm_up_galaxy in scripts/lib.sh)."""
    history = gi.histories.create_history("warm-up")
    dataset = gi.tools.paste_content("warm-up", history["id"], file_type="txt")["outputs"][0]
    gi.datasets.wait_for_dataset(dataset["id"], maxwait=300)
    gi.histories.delete_history(history["id"], purge=True)


def user_api_key(admin: GalaxyInstance) -> str:
    users = admin.users.get_users(f_email=USER_EMAIL)
    user = users[0] if users else admin.users.create_local_user(USER_NAME, USER_EMAIL, USER_PASSWORD)
    return admin.users.get_or_create_user_apikey(user["id"])


def import_workflows(gi: GalaxyInstance) -> dict[str, str]:
    """Every workflow of workflows/ in the user's list, replacing an earlier import of the same
    name (so that the list shows this checkout's versions); their ids by file stem."""
    present = gi.workflows.get_workflows()
    ids = {}
    for path in sorted((REPO / "workflows").glob("*.yml")):
        if path.stem.endswith("-tests"):
            continue
        workflow = yaml.safe_load(path.read_text())
        for earlier in present:
            if earlier["name"] == workflow["label"]:
                gi.workflows.delete_workflow(earlier["id"])
        ids[path.stem] = gi.workflows.import_workflow_dict(workflow)["id"]
    return ids


def upload_list(gi: GalaxyInstance, history_id: str, name: str, files: dict[str, Path], file_type: str = "tiff") -> str:
    """Upload files as a list collection (element identifier -> file); its id."""
    elements = []
    for identifier, path in files.items():
        dataset = gi.tools.upload_file(str(path), history_id, file_type=file_type, file_name=path.name)["outputs"][0]
        elements.append({"name": identifier, "src": "hda", "id": dataset["id"]})
    for element in elements:
        gi.datasets.wait_for_dataset(element["id"], maxwait=600)
    collection = gi.histories.create_dataset_collection(
        history_id, {"collection_type": "list", "name": name, "element_identifiers": elements})
    return collection["id"]


def screenshot(url: str, picture: Path, size: str) -> None:
    """A picture of a page as headless Chromium renders it (after its scripts have run)."""
    chromium = shutil.which("chromium")
    if not chromium:
        print(f"no chromium: no screenshot of {url}", file=sys.stderr)
        return
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                        "--disable-background-networking", "--disable-component-update", "--hide-scrollbars",
                        f"--user-data-dir={profile}", f"--window-size={size}", "--virtual-time-budget=20000",
                        f"--screenshot={picture}", url], capture_output=True, timeout=180, check=True)


def main() -> int:
    url, admin_key, out_dir = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    gi = GalaxyInstance(url, key=user_api_key(GalaxyInstance(url, key=admin_key)))
    warm_up(gi)
    workflows = import_workflows(gi)
    print(f"workflows imported for {USER_EMAIL}: {', '.join(workflows)}")
    history = gi.histories.create_history("dlhisto demo: U-Net nuclei segmentation (workflow nuclei_unet)")
    data = REPO / "test-data"
    inputs = {
        "training_images": {q: data / f"nuclei_{q}.tif" for q in TRAINING},
        "training_labels": {q: data / f"nuclei_{q}_groundtruth.tif" for q in TRAINING},
        "images": {q: data / f"nuclei_{q}.tif" for q in HELD_OUT},
        "ground_truth": {q: data / f"nuclei_{q}_groundtruth.tif" for q in HELD_OUT},
    }
    collections = {name: upload_list(gi, history["id"], name, files) for name, files in inputs.items()}
    print(f"running workflow {WORKFLOW}: U-Net trained on {', '.join(TRAINING)}, evaluated on {', '.join(HELD_OUT)} "
          "(a few minutes on a laptop's CPU)", flush=True)
    invocation = gi.workflows.invoke_workflow(
        workflows[WORKFLOW], history_id=history["id"], inputs_by="name",
        inputs={name: {"src": "hdca", "id": collection_id} for name, collection_id in collections.items()})
    outputs = finished_outputs(gi, invocation["id"])
    if outputs is None:
        return 1
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    files = {"scores": out_dir / "nuclei_q4_scores.tsv", "report": out_dir / "nuclei_q4_report.html"}
    download(gi, url, outputs, files)
    print("\nEvaluation of the held-out quadrant q4 against its 29 human-annotated nuclei:\n")
    print("".join(line for line in files["scores"].open() if line.startswith(("image", "all"))))
    gi.histories.update_history(history["id"], published=True)
    history_url = f"{url}/published/history?id={history['id']}"
    screenshot(history_url, out_dir / "history.png", "1400,1000")
    screenshot(files["report"].resolve().as_uri(), out_dir / "report.png", "1200,2000")
    if not apply_from_model_base(gi, history["id"], outputs["model"]["id"], outputs["scores"]["id"],
                                 collections["images"], out_dir):
        return 1
    if not apply_pretrained(gi, history["id"], collections["images"], collections["ground_truth"], out_dir):
        return 1
    slide_history = run_slide_workflow(gi, url, workflows, out_dir)
    if slide_history is None:
        return 1
    print(f"Outputs in {out_dir}/: {', '.join(sorted(p.name for p in out_dir.iterdir()))}")
    print(f"\nGalaxy: {url}  (log in as {USER_EMAIL} / {USER_PASSWORD})\n"
          f"  history '{history['name']}' (published: {history_url})\n"
          f"  history '{slide_history['name']}'\n"
          f"  workflows: {url}/workflows/list")
    return 0


def apply_from_model_base(gi: GalaxyInstance, history_id: str, model_id: str, scores_id: str, images_id: str,
                          out_dir: Path) -> bool:
    """The facility's side, then the biologist's: the trained model goes into the model base with
    its evaluation on the held-out quadrant (the data manager; the demo user is also the facility's
    admin), then Predict applies it from there to the held-out image in one step, nothing uploaded."""
    print("\ninstalling the trained U-Net into the facility's model base with its evaluation (data manager "
          "dlhisto_model_installer)", flush=True)
    run = gi.tools.run_tool(history_id, "dlhisto_model_installer", {
        "model": {"src": "hda", "id": model_id}, "model_id": "demo_nuclei_unet",
        "evaluation": {"src": "hda", "id": scores_id}})
    if not job_ok(gi, run["jobs"][0]["id"]):
        return False
    image = gi.histories.show_dataset_collection(history_id, images_id)["elements"][0]["object"]["id"]
    run = gi.tools.run_tool(history_id, "dlhisto_predict", {
        "input": {"src": "hda", "id": image}, "model_cond|model_source": "base",
        "model_cond|base_model": "demo_nuclei_unet", "outputs_wanted": "objects", "tile_size": 256})
    if not job_ok(gi, run["jobs"][0]["id"]):
        return False
    summary = next(o for o in run["outputs"] if o["output_name"] == "summary")
    (out_dir / "model_base_predict_summary.tsv").write_bytes(gi.datasets.download_dataset(summary["id"]))
    print("Predict with 'demo_nuclei_unet' from the model base on q4:\n"
          + (out_dir / "model_base_predict_summary.tsv").read_text())
    return True


def apply_pretrained(gi: GalaxyInstance, history_id: str, images_id: str, truth_id: str, out_dir: Path) -> bool:
    """dlhisto's pretrained models go into the model base (the data manager makes each package
    from the weights dlhisto ships, with its held-out evaluation), then the fluorescence nuclei
    model is applied to the held-out quadrant with no training at all, and scored."""
    print("\ninstalling dlhisto's pretrained models into the model base: " + ", ".join(SHIPPED), flush=True)
    for name in SHIPPED:
        run = gi.tools.run_tool(history_id, "dlhisto_model_installer", {
            "source|source": "shipped", "source|shipped_model": name, "model_id": name})
        if not job_ok(gi, run["jobs"][0]["id"]):
            return False
    run = gi.tools.run_tool(history_id, "dlhisto_predict", {  # mapped over the collection: element names kept
        "input": {"batch": True, "values": [{"src": "hdca", "id": images_id}]}, "model_cond|model_source": "base",
        "model_cond|base_model": "nuclei_fluorescence", "outputs_wanted": "objects", "tile_size": 256})
    if not all(job_ok(gi, job["id"]) for job in run["jobs"]):
        return False
    objects = next(c for c in run["implicit_collections"] if c["output_name"] == "objects")
    run = gi.tools.run_tool(history_id, "dlhisto_evaluate", {
        "mode_cond|mode": "instance", "mode_cond|predictions": {"src": "hdca", "id": objects["id"]},
        "mode_cond|truths": {"src": "hdca", "id": truth_id}, "mode_cond|thresholds": "0.5"})
    if not job_ok(gi, run["jobs"][0]["id"]):
        return False
    scores = next(o for o in run["outputs"] if o["output_name"] == "table")
    (out_dir / "pretrained_q4_scores.tsv").write_bytes(gi.datasets.download_dataset(scores["id"]))
    print("The pretrained fluorescence nuclei model on q4, no training:\n" + "".join(
        line for line in (out_dir / "pretrained_q4_scores.tsv").open() if line.startswith(("image", "all"))))
    return True


def job_ok(gi: GalaxyInstance, job_id: str) -> bool:
    job = gi.jobs.wait_for_job(job_id, maxwait=1800, check=False)
    if job["state"] != "ok":
        print(f"job {job['tool_id']} failed: {gi.jobs.show_job(job_id, full_details=True).get('stderr', '')}")
    return job["state"] == "ok"


def run_slide_workflow(gi: GalaxyInstance, url: str, workflows: dict[str, str], out_dir: Path) -> dict | None:
    """he_slide_cell_types on the real Aperio slide, in a history of its own (the pretrained H&E
    models from the model base); its outputs downloaded, the counts per type and region printed,
    and the typed nuclei drawn over a region of the slide (out_dir/he_slide_cell_types.png)."""
    history = gi.histories.create_history("dlhisto demo: cell types of an H&E scanner slide, counted per tissue "
                                          "region, to QuPath (workflow he_slide_cell_types)")
    slide = REPO / "test-data" / "cmu_small_region.svs"
    dataset = gi.tools.upload_file(str(slide), history["id"], file_type="svs", file_name=slide.name)["outputs"][0]
    gi.datasets.wait_for_dataset(dataset["id"], maxwait=600)
    print("\nrunning workflow he_slide_cell_types on a real Aperio SVS (2220 x 2967 px at 0.499 µm): the pretrained "
          "H&E models from the model base, no training: nuclei, their types, the tissue map, counts per region",
          flush=True)
    invocation = gi.workflows.invoke_workflow(workflows["he_slide_cell_types"], history_id=history["id"],
                                              inputs_by="name", inputs={"slide": {"src": "hda", "id": dataset["id"]}})
    outputs = finished_outputs(gi, invocation["id"])
    if outputs is None:
        return None
    files = {"counts": out_dir / "cmu_slide_cell_counts.tsv", "qupath_cells": out_dir / "cmu_slide_cells.geojson",
             "tissue_map": out_dir / "cmu_slide_tissue_map.geojson", "cell_types": out_dir / "cmu_slide_cell_types.tsv",
             "nuclei": out_dir / "cmu_slide_nuclei.ome.tif"}
    download(gi, url, outputs, files)
    print("".join(files["counts"].open()))
    picture = out_dir / "he_slide_cell_types.png"  # drawn in dlhisto's environment (this script runs in planemo's)
    drawn = subprocess.run([str(REPO / ".venv" / "bin" / "python"), str(REPO / "scripts" / "overlay.py"), str(slide),
                            str(files["nuclei"]), str(picture), "--types", str(files["cell_types"]), "--caption",
                            "dlhisto nuclei_he + nuclei_types_he on CMU-1 (Aperio, 0.499 um/px), no training: "
                            "{count} nuclei here"], capture_output=True, text=True)
    if drawn.returncode:
        print(f"drawing the nuclei failed: {drawn.stderr.strip()}", file=sys.stderr)
        return None
    print(f"{drawn.stdout.split()[0]} typed nuclei outlined over dermis, epidermis and keratin: {picture}")
    print(f"QuPath: open cmu_small_region.svs, then File > Import objects: {files['qupath_cells']} and "
          f"{files['tissue_map']}")
    viewer = gi.datasets.show_dataset(outputs["viewer"]["id"])
    prefix = out_dir / "he_slide_viewer"
    shot = subprocess.run([str(REPO / ".venv" / "bin" / "python"), str(REPO / "scripts" / "viewer_screenshot.py"), url,
                           USER_EMAIL, USER_PASSWORD, history["id"], viewer["id"], str(viewer["hid"]), str(prefix),
                           *VIEWER_ZOOM], capture_output=True, text=True)
    if shot.returncode:
        print(f"the viewer's screenshots failed: {shot.stderr.strip()[-500:]}", file=sys.stderr)
        return None
    print(f"The viewer, one click from the history (the eye icon of '{viewer['name']}'): {prefix}_overview.png, "
          f"and zoomed into the dermis: {prefix}_zoom.png")
    return history


def finished_outputs(gi: GalaxyInstance, invocation_id: str) -> dict | None:
    """The outputs of a finished invocation, or None (and the failed job's stderr) if a job failed."""
    gi.invocations.wait_for_invocation(invocation_id, maxwait=3600)
    for job in gi.jobs.get_jobs(invocation_id=invocation_id):
        job = gi.jobs.wait_for_job(job["id"], maxwait=3600, check=False)
        if job["state"] != "ok":
            print(f"the Galaxy job {job['tool_id']} ended '{job['state']}': "
                  f"{gi.jobs.show_job(job['id'], full_details=True).get('stderr', '').strip()}", file=sys.stderr)
            return None
    return gi.invocations.show_invocation(invocation_id)["outputs"]


def download(gi: GalaxyInstance, url: str, outputs: dict, files: dict[str, Path]) -> None:
    """Workflow outputs by name into files (the dataset itself: Galaxy zips an HTML dataset given to_ext)."""
    for name, path in files.items():
        content = gi.make_get_request(f"{url}/api/datasets/{outputs[name]['id']}/display")
        content.raise_for_status()
        path.write_bytes(content.content)


if __name__ == "__main__":
    sys.exit(main())
