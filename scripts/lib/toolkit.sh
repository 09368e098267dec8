# Sourced by the static-gate scripts (ptxas-check.sh, sass-check.sh): finds the CUDA toolkit the
# way build.rs does — NVCC, then CUDA_HOME/bin/nvcc, then PATH — and the tools beside it.
#
#   source "$repo/scripts/lib/toolkit.sh"
#   nvcc=$(toolkit_nvcc) || exit 1
#   ptxas=$(toolkit_tool "$nvcc" ptxas) || exit 1

# toolkit_nvcc: prints the path of nvcc, or explains on stderr and fails.
toolkit_nvcc() {
  if [ -n "${NVCC:-}" ]; then
    printf '%s\n' "$NVCC"
  elif [ -n "${CUDA_HOME:-}" ] && [ -x "$CUDA_HOME/bin/nvcc" ]; then
    printf '%s\n' "$CUDA_HOME/bin/nvcc"
  elif command -v nvcc >/dev/null; then
    command -v nvcc
  else
    echo "error: nvcc not found (set CUDA_HOME or NVCC; scripts/install-cuda-toolkit.sh installs it)" >&2
    return 1
  fi
}

# toolkit_tool NVCC NAME: prints the path of the toolkit program NAME (ptxas, cuobjdump, ...)
# next to NVCC, else on PATH, or explains on stderr and fails.
toolkit_tool() {
  local t
  t=$(dirname "$1")/$2
  [ -x "$t" ] || t=$(command -v "$2" || true)
  if [ -z "$t" ] || [ ! -x "$t" ]; then
    echo "error: $2 not found next to $1 or on PATH (scripts/install-cuda-toolkit.sh installs it)" >&2
    return 1
  fi
  printf '%s\n' "$t"
}
