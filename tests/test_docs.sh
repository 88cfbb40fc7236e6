#!/bin/sh
# tests/test_docs.sh BUILD — the examples of the docs cannot rot:
#
#   1. every command in a ```sh block of README.md and docs/MKMODEL.md runs,
#      in order, in a fresh temporary directory (with `build`, `data` and
#      `ref_data` linked to BUILD and the source tree's data/ and ref_data/:
#      the tour runs the trained model ref_data/models/austen-tiny), and exits 0. Lines
#      starting with `make` are the exception, counted and named: they are
#      what runs this test (`make test`) or build what it uses (`make run`);
#      a block meant not to run (a download) is fenced as ```text;
#   2. the man page (man/ds3.1) and the bash completion (completion/ds3.bash)
#      name every option of every command's --help.
#
# Prints one line per failure and closes with "N passed, N failed". POSIX sh.
set -u
build=${1:-build}
case $build in /*) ;; *) build=$(pwd)/$build ;; esac
src=$(pwd)
pass=0; fail=0; skipped=0
ok()  { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*"; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/ds3-docs.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT INT TERM
ln -s "$build" "$tmp/build"
ln -s "$src/data" "$tmp/data"
ln -s "$src/ref_data" "$tmp/ref_data"

# ---- 1. the fenced commands ----------------------------------------------------
for doc in README.md docs/MKMODEL.md; do
    # the lines of ```sh blocks, backslash continuations joined
    awk '/^```sh[ \t]*$/ { inblk = 1; next }
         /^```/          { inblk = 0; next }
         inblk {
             line = $0
             if (cont != "") line = cont " " line
             if (line ~ /\\$/) { sub(/\\$/, "", line); cont = line; next }
             cont = ""
             print line
         }' "$doc" > "$tmp/commands"
    n=0
    while IFS= read -r cmd; do
        case $cmd in ''|'#'*) continue ;; esac
        n=$((n + 1))
        case $cmd in
            make\ *|make)
                skipped=$((skipped + 1)); echo "-- $doc: not run (it is make's own): $cmd"; continue ;;
        esac
        if (cd "$tmp" && sh -c "$cmd" < /dev/null > "$tmp/out" 2> "$tmp/err"); then
            ok
        else
            bad "$doc: exit $?: $cmd"
            sed 's/^/    /' "$tmp/err" | tail -n 5
        fi
    done < "$tmp/commands"
    [ "$n" -gt 0 ] && ok || bad "$doc: no commands found in its \`\`\`sh blocks"
done

# ---- 2. man page and completion against --help ------------------------------------
for cmd in mkmodel info run chat dump compare replay tokenize detokenize; do
    opts=$("$build/ds3" "$cmd" --help | grep -o -e '--[a-z][a-z0-9-]*' -e '^ *-[a-z],' | tr -d ' ,' | sort -u)
    [ -n "$opts" ] || bad "ds3 $cmd --help names no options"
    for o in $opts; do
        case $o in --help) continue ;; esac
        # the man page escapes '-' as '\-'
        esc=$(printf '%s' "$o" | sed 's/-/\\-/g')
        grep -qF -e "$esc" man/ds3.1 && ok || bad "man/ds3.1 does not name $cmd's $o"
        grep -q -e " $o\b" -e "\"$o " -e " $o\"" -e "=\"$o " completion/ds3.bash && ok ||
            bad "completion/ds3.bash does not name $cmd's $o"
    done
done

# the completion is valid bash
if command -v bash > /dev/null 2>&1; then
    bash -n completion/ds3.bash && ok || bad "completion/ds3.bash: bash -n fails"
fi

echo "($skipped make commands not run)"
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
