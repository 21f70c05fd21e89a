# Shared by tools/wheel_check.sh and tools/memcheck.sh (sourced, not run).

# copy_checkout ROOT DEST: what a fresh clone would hold once the pending files are committed
# (tracked files plus untracked, not ignored ones), so no build products, venvs or caches.
copy_checkout() {
    local root=$1 dest=$2
    rm -rf "$dest"
    mkdir -p "$dest"
    if git -C "$root" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
        (cd "$root" && git ls-files -z --cached --others --exclude-standard |
            while IFS= read -r -d '' f; do [[ -e "$f" ]] && printf '%s\0' "$f"; done |
            tar --null -T - -cf -) | tar -xf - -C "$dest"
    else  # not a git checkout (an unpacked sdist, say)
        (cd "$root" && tar --exclude=./.venv --exclude=./build --exclude=./dist \
            --exclude=./wheelhouse --exclude='*.so' --exclude='*.c' --exclude=__pycache__ \
            --exclude=.git -cf - .) | tar -xf - -C "$dest"
    fi
    if find "$dest" \( -name '*.so' -o -name '*.c' \) | grep -q .; then
        echo "the copy of the checkout holds build products:" >&2
        find "$dest" \( -name '*.so' -o -name '*.c' \) >&2
        return 1
    fi
}

# copy_test_sources PYTHON TREE DEST: the [tool.cibuildwheel] test-sources of TREE/pyproject.toml
# (tests/, examples/, pyproject.toml) into DEST, as cibuildwheel does before it runs the tests.
copy_test_sources() {
    local py=$1 tree=$2 dest=$3 s
    local -a sources
    mapfile -t sources < <("$py" - "$tree/pyproject.toml" <<'EOF'
import sys
try:
    import tomllib
except ImportError:  # Python 3.10
    print("tests\nexamples\npyproject.toml")
else:
    print("\n".join(tomllib.load(open(sys.argv[1], "rb"))["tool"]["cibuildwheel"]["test-sources"]))
EOF
    )
    [[ ${#sources[@]} -gt 0 ]] || { echo "no test-sources found in $tree/pyproject.toml" >&2; return 1; }
    mkdir -p "$dest"
    for s in "${sources[@]}"; do
        cp -r "$tree/$s" "$dest/$s"
    done
    echo "test-sources copied to $dest: ${sources[*]}"
}
