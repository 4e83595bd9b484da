# What the shell tests share (sourced): check STATUS WHAT [DETAILS] prints PASS or FAIL, with the
# details indented on failure, and counts both in $passed and $failed.
passed=0 failed=0
check() {
  if [[ $1 == 0 ]]; then
    echo "PASS: $2"; passed=$((passed + 1))
  else
    echo "FAIL: $2"; failed=$((failed + 1))
    [[ -n ${3:-} ]] && printf '%s\n' "$3" | sed 's/^/  /'
  fi
}
