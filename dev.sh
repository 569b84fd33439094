#!/usr/bin/env bash
# The project's two set-up commands (see README):  ./dev.sh app   |   ./dev.sh test [pytest args]
# Each creates .venv, installs the pinned requirements and then the project itself, editable (the
# fundus, zoo, explain, train and appcore packages and the fundus-zoo / fundus-explain / fundus-train
# commands, see pyproject.toml), on first use; later runs reuse it (a hash of the requirement files and
# pyproject.toml marks a finished install, so an interrupted or outdated one is redone).
set -euo pipefail
cd "$(dirname "$0")"
venv=.venv
stamp="$venv/.installed-$(cat requirements.txt requirements-dev.txt pyproject.toml | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "dev.sh: installing the pinned environment into $venv (first run: ~2-3 minutes, ~5.5 GB)…" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check -r requirements.txt -r requirements-dev.txt
  # The project itself, editable: the code is read from this checkout; the pins above are its dependencies.
  "$venv/bin/pip" install -q --disable-pip-version-check --no-deps -e .
  rm -f "$venv"/.installed-* && touch "$stamp"
fi
export GRADIO_ANALYTICS_ENABLED=False HF_HUB_DISABLE_TELEMETRY=1
cmd="${1:-}"; shift || true
case "$cmd" in
  app)
    exec "$venv/bin/python" app.py "$@" ;;
  test)
    # The browser test drives Debian's Chromium; install it when missing and we may (root, apt).
    if [ ! -x /usr/bin/chromium ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      echo "dev.sh: installing Debian's chromium for the browser tests…" >&2
      (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
        || echo "dev.sh: chromium could not be installed; browser tests will skip" >&2
    fi
    exec "$venv/bin/python" -m pytest "$@" ;;
  *)
    echo "usage: ./dev.sh app | test [pytest args]" >&2; exit 2 ;;
esac
