#!/usr/bin/env bash
# Debian's chromium and chromedriver, for tests/views/test_browser.py (the playground in a real browser).
# Installed with apt-get when missing; never fails the build: without them the browser tests skip and say why.
if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
    exit 0
fi
if [ "$(id -u)" = 0 ]; then
    SUDO=()
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    SUDO=(sudo -n)
else
    echo "!!! chromium/chromedriver missing and apt-get needs root: the browser tests will SKIP." >&2
    echo "!!! Install them with: sudo apt-get install chromium chromium-driver" >&2
    exit 0
fi
echo "Installing chromium and chromedriver (apt-get) for the browser test..."
if ! { "${SUDO[@]}" apt-get update -qq &&
       DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -qq \
           chromium chromium-driver >/dev/null; }; then
    echo "!!! apt-get could not install chromium chromium-driver: the browser tests will SKIP." >&2
fi
exit 0
