#!/usr/bin/env bash
# Mutation testing (mutmut 3.8.1) of the verifier's checking modules and the service's window and
# ledger code, in a scratch copy so the work tree is never touched. Slow (tens of minutes); not part
# of ./run test. Prints every mutant that survived or timed out; `mutmut show NAME` in the scratch
# directory shows one.
#
# After the run, each survivor is run again against every selected test (MUTATION_RECHECK=0: not), since
# mutmut's own per-test map can miss a test; MUTATION_RECHECK_ONLY=1 MUTATION_DIR=DIR re-checks a past run.
#
# Usage: tools/mutation.sh [GLOB ...]   (default: the modules below; e.g. src/receipt_verifier/merkle.py)
#   MUTATION_TESTS="tests/verifier/ tests/service/test_windows.py" tools/mutation.sh src/...   only those tests (faster:
#   the service's HTTP tests run for every mutant of a function they touch)
# The README's figures came from one run per group, each naming the tests that cover it, e.g.
#   MUTATION_TESTS="tests/verifier/test_codec.py tests/verifier/test_codec_messages.py tests/verifier/test_verify_path.py
#     tests/verifier/test_vectors.py tests/verifier/test_fastpath.py" tools/mutation.sh src/receipt_verifier/codec.py
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
py=${PYTHON:-$repo/.venv/bin/python}
[[ -x "$py" ]] || { echo "mutation: run ./run test once first (it creates .venv)" >&2; exit 2; }
"$py" -m pip install --quiet 'mutmut==3.8.1'

modules=("$@")
if [[ ${#modules[@]} -eq 0 ]]; then
  modules=(src/receipt_verifier/verify.py src/receipt_verifier/codec.py src/receipt_verifier/fastpath.py
           src/receipt_verifier/merkle.py src/receipt_verifier/ledger.py src/receipt_verifier/proof_id.py
           src/receipt_verifier/fabric/evidence.py src/receipt_verifier/fabric/policy.py
           src/receipt_verifier/fabric/blocks.py src/receipt_verifier/fabric/msp.py src/receipt_verifier/fabric/trust.py
           src/receipt_verifier/history.py src/receipt_verifier/logs.py src/receipt_verifier/sorted_heads.py
           src/receipt_verifier/access_event.py
           receipt_service/windows.py receipt_service/leadership.py receipt_service/ledger.py)
fi
scratch=${MUTATION_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/mutation.XXXXXX")}
read -r -a selection <<< "${MUTATION_TESTS:-tests/}"   # several paths: space-separated
# tests that read the repository's own layout, need npm packages, or run subprocesses of the installed copy
exclude="not chainpoint and not closed_pipe and not stream and not test_offline and not identical and not loadtest"
if [[ ${MUTATION_RECHECK_ONLY:-0} != 1 ]]; then
  echo "mutation: scratch copy in $scratch" >&2
  mkdir -p "$scratch/tests"
  cp -r verifier/src proof_spec receipt_service pyproject.toml README.md "$scratch/"
  cp -r tests/*.py tests/verifier tests/service "$scratch/tests/"   # *.py: conftest and the shared Fabric forge
  rm -rf "$scratch/tests/service/fabric"   # the Fabric tests need a network; tests/verifier covers their checks
  {
    echo "[mutmut]"
    echo "source_paths=src"
    echo "    receipt_service"
    printf 'only_mutate=%s\n' "${modules[0]}"
    for m in "${modules[@]:1}"; do printf '    %s\n' "$m"; done
    echo "pytest_add_cli_args_test_selection=${selection[0]}"
    for t in "${selection[@]:1}"; do printf '    %s\n' "$t"; done
    echo "pytest_add_cli_args=-k"
    echo "    $exclude"
    echo "also_copy=tests"
    echo "    proof_spec"
    echo "    pyproject.toml"
    echo "    README.md"
  } > "$scratch/setup.cfg"
  cd "$scratch"
  "$py" -m mutmut run || true
fi
cd "$scratch"
"$py" -m mutmut results
[[ ${MUTATION_RECHECK:-1} == 1 ]] || exit 0

# mutmut runs a mutant only against the tests it saw reach the mutated function, and that map can miss
# one (a killable windows mutant got through that way). Each survivor runs once more against the whole
# selection, with a 10-minute limit; the ones it kills are listed.
mapfile -t survivors < <("$py" -m mutmut results | awk '$2 == "survived" {sub(":$", "", $1); print $1}')
[[ ${#survivors[@]} -gt 0 ]] || exit 0
cd "$scratch/mutants"
selected() { PYTHONPATH=src:. timeout 600 "$py" -m pytest -x -q -p no:cacheprovider "${selection[@]}" -k "$exclude"; }
if ! selected > "$scratch/recheck-baseline.log" 2>&1; then
  echo "mutation: the selected tests fail with no mutant active (see $scratch/recheck-baseline.log); no re-check" >&2
  exit 1
fi
echo "mutation: re-running ${#survivors[@]} survivor(s) against every selected test" >&2
caught=0
for i in "${!survivors[@]}"; do
  printf 'mutation: re-check %d/%d\r' $((i + 1)) ${#survivors[@]} >&2
  MUTANT_UNDER_TEST=${survivors[$i]} selected > /dev/null 2>&1 && continue
  case $? in
    124) echo "    ${survivors[$i]}: timed out under the whole selection" ;;
    *) echo "    ${survivors[$i]}: killed by the whole selection" ;;
  esac
  caught=$((caught + 1))
done
echo "mutation: the whole selection caught $caught of ${#survivors[@]} survivor(s); the rest survive" >&2
