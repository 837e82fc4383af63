#!/usr/bin/env bash
# Mutation testing (mutmut 3.8.1) of the verifier's checking modules and the service's window and
# ledger code, in a scratch copy so the work tree is never touched. Slow (tens of minutes); not part
# of ./run test. Prints every mutant that survived or timed out; `mutmut show NAME` in the scratch
# directory shows one.
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
           src/receipt_verifier/history.py src/receipt_verifier/access_event.py
           receipt_service/windows.py receipt_service/ledger.py)
fi
scratch=${MUTATION_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/mutation.XXXXXX")}
echo "mutation: scratch copy in $scratch" >&2
mkdir -p "$scratch/tests"
cp -r verifier/src proof_spec receipt_service pyproject.toml README.md "$scratch/"
cp -r tests/*.py tests/verifier tests/service "$scratch/tests/"   # *.py: conftest and the shared Fabric forge
rm -rf "$scratch/tests/service/fabric"   # the Fabric tests need a network; the checks they cover are in tests/verifier too
{
  echo "[mutmut]"
  echo "source_paths=src"
  echo "    receipt_service"
  printf 'only_mutate=%s\n' "${modules[0]}"
  for m in "${modules[@]:1}"; do printf '    %s\n' "$m"; done
  read -r -a selection <<< "${MUTATION_TESTS:-tests/}"   # several paths: space-separated
  echo "pytest_add_cli_args_test_selection=${selection[0]}"
  for t in "${selection[@]:1}"; do printf '    %s\n' "$t"; done
  # tests that read the repository's own layout, need npm packages, or run subprocesses of the installed copy
  echo "pytest_add_cli_args=-k"
  echo "    not chainpoint and not closed_pipe and not stream and not test_offline and not identical and not loadtest"
  echo "also_copy=tests"
  echo "    proof_spec"
  echo "    pyproject.toml"
  echo "    README.md"
} > "$scratch/setup.cfg"
cd "$scratch"
"$py" -m mutmut run || true
"$py" -m mutmut results
