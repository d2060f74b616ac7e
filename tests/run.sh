#!/usr/bin/env bash
# The test command (README): brings what the tests need, then runs them.
#   - the virtual environment .venv/ with the project and its test extras (pinned, requirements.lock);
#   - Debian's openssh-server when sshd is missing and this user may install it (the SFTP tests
#     start their own sshd on 127.0.0.1; under CI=true a missing sshd fails them, never skips).
# Extra arguments go to pytest, e.g. `bash tests/run.sh -k sf6110`.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -c requirements.lock -e '.[test]'

if [ ! -x /usr/sbin/sshd ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "installing openssh-server (the SFTP tests run a real sshd)"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends openssh-server >/dev/null
    else
        echo "note: /usr/sbin/sshd is missing and cannot be installed here: SFTP tests will skip (fail under CI=true)"
    fi
fi

exec .venv/bin/python -m pytest "$@"
