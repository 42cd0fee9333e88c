#!/usr/bin/env bash
# System packages of the gsam-tfx environment, run as root on Debian 13 (trixie).
# Shared by the Dockerfile and the debootstrapped root that scripts/provision.py builds,
# so CI exercises the same steps the image uses.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
apt-get update
# g++ and python3-dev: some dependencies (pyfarmhash) build from source on Python 3.13.
apt-get install -y --no-install-recommends \
  ca-certificates g++ python3 python3-dev python3-pip python3-venv
apt-get clean
rm -rf /var/lib/apt/lists/*
