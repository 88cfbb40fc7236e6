#!/bin/sh
# fetch-corpus.sh DIR — the training corpus of tools/train_tiny.py: Jane Austen's six novels as
# Debian's r-cran-janeaustenr ships them (texts public domain; the R package MIT). The .deb is
# downloaded with apt-get and unpacked into DIR with dpkg-deb; nothing is installed (the package
# would pull in R). ref_data/README.md says more.
set -eu
dir=${1:?usage: fetch-corpus.sh DIR}
mkdir -p "$dir"
if [ -f "$dir/usr/lib/R/site-library/janeaustenr/data/Rdata.rdb" ]; then
    echo "fetch-corpus: $dir already holds janeaustenr"
    exit 0
fi
command -v apt-get >/dev/null 2>&1 || { echo "fetch-corpus: needs apt-get (Debian/Ubuntu)" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if ! (cd "$tmp" && apt-get download r-cran-janeaustenr >/dev/null 2>&1); then
    if [ "$(id -u)" = 0 ]; then apt-get update >/dev/null 2>&1 || true; fi
    (cd "$tmp" && apt-get download r-cran-janeaustenr) ||
        { echo "fetch-corpus: apt-get download r-cran-janeaustenr failed" >&2; exit 1; }
fi
dpkg-deb -x "$tmp"/r-cran-janeaustenr_*.deb "$dir"
echo "fetch-corpus: janeaustenr unpacked into $dir"
