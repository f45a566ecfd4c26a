#!/usr/bin/env bash
# A `docker` command for Galaxy's container support (docker_cmd in the job configuration) that
# runs the tools' image with Debian's podman on machines like this project's CI machines, where
# plain `podman run` fails in three ways (the exact errors, with podman 4.3 and crun 1.8):
#
#   crun: setrlimit `RLIMIT_NOFILE`: Operation not permitted: OCI permission denied
#       podman asks for 1048576 open files, above this machine's hard limit: ask for the current one
#   crun: setrlimit `RLIMIT_NPROC`: Operation not permitted: OCI permission denied
#       the same for processes: ask for no more than the kernel's pid_max (above it, even the
#       current limit is refused)
#   crun: cgroups in hybrid mode not supported, drop all controllers from cgroupv2
#       cgroup v1 controllers beside a cgroup v2 mount: run podman in a mount namespace of its
#       own without the v2 mount, with --cgroups disabled (so no --cpus or --memory, which
#       Galaxy always passes: dropped here; Slurm's allocation still bounds the job, and dlhisto
#       uses GALAXY_SLOTS threads)
#
# (runc fails too: 'error mounting "cgroup" to rootfs at "/sys/fs/cgroup"'.) On a host with
# Docker, or podman on a systemd machine, none of this is needed: set docker_cmd to docker or podman.
# Every other docker sub-command (inspect, pull, kill, images) goes to podman as it is.
set -euo pipefail

if [ "${1:-}" != run ]; then
    exec podman "$@"
fi
shift
nproc=$(ulimit -Su)
pid_max=$(cat /proc/sys/kernel/pid_max)
[ "$nproc" = unlimited ] || [ "$nproc" -gt "$pid_max" ] && nproc=$pid_max
args=(run --cgroups disabled --ulimit "nofile=$(ulimit -Sn):$(ulimit -Sn)" --ulimit "nproc=$nproc:$nproc")
while [ $# -gt 0 ]; do  # docker run's options up to the image; the image and its command as they are
    case "$1" in
        --cpus|-m|--memory) shift 2 ;;
        -e|-v|-w|-p|-u|--name|--net|--network|--user|--volumes-from|--workdir|--env|--volume|--entrypoint)
            args+=("$1" "$2"); shift 2 ;;
        -*) args+=("$1"); shift ;;
        *) break ;;
    esac
done
args+=("$@")
exec unshare --mount sh -c 'umount /sys/fs/cgroup/unified 2>/dev/null || true; exec podman "$@"' podman "${args[@]}"
