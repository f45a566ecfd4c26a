"""Run the bundled classic segmentation in a running Galaxy through its API (BioBlend).

Creates (or reuses) a local user, uploads test-data/nuclei.tif into a new history, runs
dlhisto_segment_classic with its defaults, downloads the outputs and prints where they are.

Usage: python run_in_galaxy.py GALAXY_URL ADMIN_KEY OUTPUT_DIR
"""

import sys
from pathlib import Path

from bioblend.galaxy import GalaxyInstance

USER_EMAIL = "demo@dlhisto.local"
USER_NAME = "demo"
USER_PASSWORD = "dlhisto-demo"
REPO = Path(__file__).resolve().parent.parent


def user_api_key(admin: GalaxyInstance) -> str:
    users = admin.users.get_users(f_email=USER_EMAIL)
    user = users[0] if users else admin.users.create_local_user(USER_NAME, USER_EMAIL, USER_PASSWORD)
    return admin.users.get_or_create_user_apikey(user["id"])


def main() -> int:
    url, admin_key, out_dir = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    gi = GalaxyInstance(url, key=user_api_key(GalaxyInstance(url, key=admin_key)))
    history = gi.histories.create_history("dlhisto demo: classic segmentation of nuclei")
    upload = gi.tools.upload_file(str(REPO / "test-data" / "nuclei.tif"), history["id"],
                                  file_type="tiff", file_name="nuclei.tif")
    image = upload["outputs"][0]
    gi.datasets.wait_for_dataset(image["id"], maxwait=600)
    run = gi.tools.run_tool(history["id"], "dlhisto_segment_classic",
                            {"input": {"src": "hda", "id": image["id"]}})
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {"labels": "nuclei_labels.ome.tif", "measurements": "nuclei_measurements.tsv",
             "summary": "nuclei_count.tsv"}
    for output in run["outputs"]:
        dataset = gi.datasets.wait_for_dataset(output["id"], maxwait=600, check=False)
        if dataset["state"] != "ok":
            print(f"the Galaxy job failed: {dataset.get('misc_info', '').strip()}", file=sys.stderr)
            return 1
        gi.datasets.download_dataset(output["id"], file_path=str(out_dir / files[output["output_name"]]),
                                     use_default_filename=False)
    summary = (out_dir / files["summary"]).read_text()
    print("\nClassic segmentation of test-data/nuclei.tif, run by Galaxy:\n")
    print(summary)
    print(f"Outputs downloaded to {out_dir}/:")
    for name in files.values():
        print(f"  {name}")
    print(f"\nGalaxy: {url}  (log in as {USER_EMAIL} / {USER_PASSWORD}; "
          f"history '{history['name']}')")
    return 0


if __name__ == "__main__":
    sys.exit(main())
