#!/bin/sh
# tests/check_layout.sh BUILD — the promises the docs make about the code:
#
#   1. every `src/FILE.c:FUNCTION` named in README.md or docs/*.md (the
#      equation table of docs/MODEL.md, the newcomer's questions, the
#      architecture page) is a function defined in that file;
#   2. docs/ARCHITECTURE.md's layout table lists every file under src/, cli/
#      and include/, and nothing else;
#   3. nothing refers to a file outside the repository (the contract is
#      docs/MODEL.md, not a document beside the repository);
#   4. the folders of src/ include each other's headers in one direction only
#      (src/error.h gives the order), and no two library object files call
#      each other, directly or through others (from `nm` on BUILD's objects).
#
# Prints one line per failure and closes with "N passed, N failed". POSIX sh,
# grep, sed, awk, nm.
set -u
build=${1:-build}
pass=0; fail=0
ok()  { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*"; }

# ---- 1. code references in the docs ----------------------------------------
refs=$(grep -ho '`src/[A-Za-z0-9_/]*\.c:[A-Za-z0-9_]*`' README.md docs/*.md | tr -d '`' | sort -u)
n_refs=0
for r in $refs; do
    file=${r%%:*}; fn=${r#*:}
    n_refs=$((n_refs + 1))
    if [ ! -f "$file" ]; then
        bad "$r: no file $file"
    # a definition starts at column 0: "type name(" or "type *name(" (not a call, not indented)
    elif grep -Eq "^[A-Za-z_].*[ *]$fn\(" "$file"; then
        ok
    else
        bad "$r: $file defines no function $fn"
    fi
done
[ "$n_refs" -ge 20 ] && ok || bad "only $n_refs code references found in the docs (the equation table alone has more)"
grep -q '^## .*[Ee]quation.*code' docs/MODEL.md && ok || bad "docs/MODEL.md has no equation-to-code section"

# ---- 2. the layout table matches the tree ----------------------------------
table=$(sed -n '/^## Layout/,/^## [0-9]/p' docs/ARCHITECTURE.md | grep '^|' | cut -d'|' -f2 |
        grep -o '`[^`]*`' | tr -d '`' | sort -u)
tree=$(find src cli include -type f | sort)
for f in $tree; do
    printf '%s\n' "$table" | grep -qx "$f" && ok || bad "docs/ARCHITECTURE.md layout does not list $f"
done
for f in $table; do
    [ -f "$f" ] && ok || bad "docs/ARCHITECTURE.md layout lists $f, which is not in the tree"
done

# ---- 3. no reference to a file outside the repository ----------------------
# The two names such references used, written as bracket patterns so that this
# script does not match itself; the CLI's "--emulate [S]PEC" is a placeholder
# for an argument, not a file.
# Only the repository's own files: tracked ones in a git checkout (a
# developer's ignored venv or build trees are not the repository), else the
# tree without dot-directories and build outputs.
if git rev-parse --git-dir > /dev/null 2>&1; then
    files=$(git ls-files | grep -v -e 'tokenizer\.json$' -e '\.safetensors$')
else
    files=$(find . -path './.*' -prune -o -path './build*' -prune -o -type f -print |
            grep -v -e 'tokenizer\.json$' -e '\.safetensors$')
fi
outside=$(printf '%s\n' "$files" | tr '\n' '\0' | xargs -0 grep -In -e '[S]PEC' -e '[.][.]/shared' 2>/dev/null |
          grep -v -e '[S]PECIAL' -e '--emulate [S]PEC')
if [ -n "$outside" ]; then
    printf '%s\n' "$outside" | sed 's/^/    /'
    bad "references to a document outside the repository (listed above)"
else
    ok
fi

# ---- 4. no circles of imports or calls -------------------------------------
# Folder order (src/error.h): a folder may include its own headers and those
# of the folders before it; the tokenizer needs error.h only.
rank() {
    case $1 in
        kernels) echo 1 ;; io) echo 2 ;; check) echo 3 ;; model) echo 4 ;;
        generate) echo 5 ;; tools) echo 6 ;; tokenizer) echo 9 ;; *) echo 0 ;;
    esac
}
for f in src/*/*.c src/*/*.h; do
    dir=$(basename "$(dirname "$f")"); r=$(rank "$dir")
    for inc in $(sed -n 's/^#include "\([a-z]*\)\/[^"]*"/\1/p' "$f"); do
        ri=$(rank "$inc")
        if [ "$dir" = tokenizer ] && [ "$inc" != tokenizer ]; then
            bad "$f includes $inc/: the tokenizer needs only error.h"
        elif [ "$ri" -gt "$r" ]; then
            bad "$f includes $inc/, a folder after its own ($dir/)"
        else
            ok
        fi
    done
done

# The call graph between object files: an edge A -> B when A uses a symbol
# that B defines. Files that use no remaining file, and files no remaining
# file uses, are removed until none is left; what stays is a circle. An
# *_avx2 file is the same kernels built with -mavx2 (chosen at run time by the
# file that dispatches to it, and using its tables): its edges do not count.
objs=""
for c in src/*.c src/*/*.c; do
    o="$build/obj/${c#src/}"; o="${o%.c}.o"
    [ -f "$o" ] && objs="$objs $o"
done
if [ -z "$objs" ]; then
    bad "no object files of src/ under $build/obj (build first)"
else
    left=$(for o in $objs; do
               nm "$o" | awk -v f="${o#$build/obj/}" 'NF == 3 && $2 ~ /^[TDBRV]$/ {print "D", f, $3}
                                                      NF == 2 && $1 == "U" {print "U", f, $2}'
           done |
    awk '
        $1 == "D" { def[$3] = $2; node[$2] = 1; next }
        { use[NR] = $2 " " $3; node[$2] = 1 }
        END {
            for (i in use) {
                split(use[i], p, " ")
                if (!(p[2] in def) || def[p[2]] == p[1] || p[1] ~ /_avx2[.]o$/ || def[p[2]] ~ /_avx2[.]o$/) continue
                e = p[1] SUBSEP def[p[2]]
                if (!(e in edge)) { edge[e] = 1; out[p[1]]++; in_[def[p[2]]]++ }
            }
            do {
                changed = 0
                for (n in node) if (!(n in gone) && (out[n] == 0 || in_[n] == 0)) {
                    gone[n] = 1; changed = 1
                    for (e in edge) {
                        split(e, q, SUBSEP)
                        if (q[2] == n && !(q[1] in gone)) out[q[1]]--
                        if (q[1] == n && !(q[2] in gone)) in_[q[2]]--
                    }
                }
            } while (changed)
            for (n in node) if (!(n in gone)) printf " %s", n
        }')
    if [ -n "$left" ]; then
        bad "object files that call each other in a circle:$left"
    else
        ok
    fi
fi

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
