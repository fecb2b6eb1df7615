# Sourced by .ci/install_dynamo.sh and .ci/install_bench.sh: installing a package whose declared requirements would
# move what the environment already runs with. The package goes in with --no-deps; its other requirements under
# constraints that hold the named distributions at their installed versions.
#
#     installed_already PYTHON CHECK     exit status of the Python code CHECK (0: nothing to do)
#     install_keeping PYTHON KEPT NO_DEPS... -- REQUIREMENT...
#         KEPT: an extended regular expression of distribution names held as installed (pip freeze spelling)

installed_already() {
    "$1" -c "$2" 2>/dev/null
}

install_keeping() {
    local python="$1" kept="$2"
    shift 2
    local no_deps=()
    while [ "$#" -gt 0 ] && [ "$1" != "--" ]; do
        no_deps+=("$1")
        shift
    done
    shift  # the --
    local constraints
    constraints="$(mktemp)"
    "$python" -m pip freeze | grep -iE "^($kept)==" >"$constraints" || true
    "$python" -m pip install --quiet --no-deps "${no_deps[@]}" \
        && "$python" -m pip install --quiet -c "$constraints" "$@"
    local status=$?
    rm -f "$constraints"
    return "$status"
}
