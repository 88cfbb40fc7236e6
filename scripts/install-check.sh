#!/bin/sh
# scripts/install-check.sh — `make install` into a temporary prefix works
# (docs/PORTABILITY.md): the installed ds3 runs the tiny model and prints what
# the build tree's prints; pkg-config --cflags --libs ds3 compiles and links a
# small C program against the installed library, which runs a forward pass;
# the installed tree still finds its data after being moved elsewhere; `make
# uninstall` removes every file. Ends with "N passed, N failed".
set -u
cd "$(dirname "$0")/.." || exit 1
jobs=$(nproc 2>/dev/null || echo 2)
pass=0; fail=0
check() { if eval "$1"; then pass=$((pass + 1)); echo "ok   $2"; else fail=$((fail + 1)); echo "FAIL $2"; fi; }

make -s -j"$jobs" all > /dev/null || exit 1
sh scripts/make-models.sh build/ds3 build/models tiny-f32 > /dev/null || exit 1
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT INT TERM
p=$tmp/usr

check "make -s install PREFIX=$p > $tmp/install.log 2>&1" "make install PREFIX=$p"
for f in bin/ds3 lib/libds3.a lib/libds3.so lib/pkgconfig/ds3.pc include/ds3.h share/ds3/tokenizers/deepseek-v3/tokenizer.json; do
    check "[ -s $p/$f ]" "installed $f"
done

args="run -m build/models/tiny-f32 --tokens 1,2,3,4,5 -n 8"
# shellcheck disable=SC2086
build/ds3 $args > $tmp/want.txt 2> /dev/null
# shellcheck disable=SC2086
check "$p/bin/ds3 $args > $tmp/got.txt 2> /dev/null && cmp -s $tmp/want.txt $tmp/got.txt" "installed ds3 run prints what build/ds3 run prints"

cat > $tmp/prog.c <<'C'
#include <ds3.h>
#include <stdio.h>
#include <stdlib.h>
int main(int argc, char **argv) {
    ds3_model *m = NULL; ds3_state *s = NULL;
    int32_t tok[3] = {1, 2, 3};
    if (argc < 2 || ds3_model_load(argv[1], &m) || ds3_state_new(m, 8, DS3_ATTN_ABSORB, &s)) {
        fprintf(stderr, "prog: %s\n", ds3_last_error());
        return 1;
    }
    int V = ds3_model_vocab_size(m), best = 0;
    ds3_real *lg = malloc((size_t)V * sizeof *lg);
    if (ds3_forward(s, tok, 3, 0, NULL) || ds3_forward(s, tok, 1, 3, lg)) return 1;
    for (int i = 1; i < V; i++) if (lg[i] > lg[best]) best = i;
    printf("argmax %d\n", best);
    free(lg); ds3_state_free(s); ds3_model_free(m);
    return 0;
}
C
pc="PKG_CONFIG_PATH=$p/lib/pkgconfig pkg-config"
check "$pc --cflags --libs ds3 > $tmp/pc.txt && grep -q -- '-lds3' $tmp/pc.txt" "pkg-config --cflags --libs ds3: $(eval "$pc --cflags --libs ds3" 2>&1)"
check "${CC:-cc} -std=c11 -o $tmp/prog $tmp/prog.c \$($pc --cflags --libs ds3) > $tmp/cc.log 2>&1" \
      "a C program compiles and links with pkg-config's flags"
check "LD_LIBRARY_PATH=$p/lib $tmp/prog build/models/tiny-f32 > $tmp/prog.txt && grep -q '^argmax ' $tmp/prog.txt" \
      "it runs a forward pass on the installed libds3.so"

# Moved: the binary finds share/ds3 from its own location (DS3_DATA_DIR unset).
mv $p $tmp/moved
check "env -u DS3_DATA_DIR $tmp/moved/bin/ds3 tokenize -m build/models/tiny-f32 < /dev/null 2>&1 | grep -q '$tmp/moved/bin/../share/ds3/tokenizers'" \
      "a moved install finds its data next to itself"
check "echo 'Hello, world' | env -u DS3_DATA_DIR $tmp/moved/bin/ds3 tokenize --tokenizer $tmp/moved/share/ds3/tokenizers/deepseek-v3 > $tmp/tok.txt && [ -s $tmp/tok.txt ]" \
      "its tokenizer data loads"
mv $tmp/moved $p

check "make -s uninstall PREFIX=$p > /dev/null 2>&1 && [ -z \"\$(find $p -type f)\" ]" "make uninstall removes every file"

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
