#!/usr/bin/env bash
# The test command (README): brings what the tests need, then runs them.
#   - the virtual environment .venv/ with the project and its test extras (pinned, requirements.lock);
#   - Debian's packages for the real parts the tests start themselves on 127.0.0.1, when missing and
#     this user may install them: openssh-server (sshd), postgresql (initdb, pg_ctl),
#     rabbitmq-server (the broker) and chromium (the browser Playwright drives). Under CI=true a
#     test whose part is missing fails, never skips.
# Extra arguments go to pytest, e.g. `bash tests/run.sh -k sf6110`.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -c requirements.lock -e '.[test]'
# The project's bytecode, as an installed package has it (the suite starts many commands; with
# PYTHONDONTWRITEBYTECODE set, each would compile every module from source again).
.venv/bin/python -m compileall -q pipelines assets contracts

missing=()
[ -x /usr/sbin/sshd ] || missing+=(openssh-server)
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=(postgresql)
[ -x /usr/sbin/rabbitmq-server ] || missing+=(rabbitmq-server)
[ -x /usr/bin/chromium ] || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "installing ${missing[*]} (the tests run the real thing)"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    else
        echo "note: ${missing[*]} missing and cannot be installed here: their tests will skip (fail under CI=true)"
    fi
fi

# pytest's "no tests ran" (5) is a failure here too: a test command that tests nothing is broken.
exec .venv/bin/python -m pytest "$@"
