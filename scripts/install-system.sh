#!/usr/bin/env bash
# System packages of the gsam-tfx environment, run as root on Debian 13 (trixie).
# Shared by the Dockerfile and the debootstrapped root that scripts/provision.py builds,
# so CI exercises the same steps the image uses.
#
#   install-system.sh [build|runtime]
#
# build    (default) what installing the Python dependencies needs: g++ and python3-dev
#          because some of them (pyfarmhash) build from source on Python 3.13.
# runtime  what running them needs: the final stage of the Docker image.
set -euo pipefail
mode=${1:-build}
runtime_packages=(ca-certificates python3)
case $mode in
  build) packages=("${runtime_packages[@]}" g++ python3-dev python3-pip python3-venv) ;;
  runtime) packages=("${runtime_packages[@]}") ;;
  *) echo "$0: mode must be 'build' or 'runtime', got '$mode'" >&2; exit 2 ;;
esac
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends "${packages[@]}"
apt-get clean
rm -rf /var/lib/apt/lists/*
