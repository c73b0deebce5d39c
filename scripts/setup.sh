#!/usr/bin/env bash
# Idempotent set-up on a fresh Debian machine: system packages, a venv in .venv, the project.
#   bash scripts/setup.sh          # runtime + serving + training + dev tools + the Pipecat and LiveKit adapters
# Re-running is cheap: apt and pip skip what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

DEB_PACKAGES=(
  espeak-ng libespeak-ng1      # speech synthesis with phoneme timing (training corpus)
  pocketsphinx-testdata        # real read speech for validation only
  libportaudio2                # sounddevice (local microphone mode)
  chromium                     # browser end-to-end tests (driven by Playwright)
  nginx-light                  # the multi-worker routing test (docs/deploy.md)
)
missing=()
for p in "${DEB_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "setup: installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
stamp=.venv/.presenter-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ scripts/setup.sh -nt "$stamp" ]; then
  pip install -q --upgrade pip
  # torch is pinned exactly: an open range pulls a multi-GB CUDA build (DESIGN.md section 6).
  pip install -q "torch==2.13.0"
  pip install -q -e ".[train,serve,onnx,dev,pipecat,livekit,ray]"
  # Their declared dependencies are stale or heavy (jupyter, gdown, opencv-python, a hub client):
  # face data, and faster-whisper only as the tests' reference log-mel.
  pip install -q --no-deps random-face==2021.7.21.1 face-recognition-models==0.3.0 faster-whisper==1.2.1
  touch "$stamp"
fi
echo "setup: ready (.venv)"
