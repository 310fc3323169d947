#!/usr/bin/env bash
# Runs every `go test -fuzz` target of the module for FUZZTIME each
# (default 10s; `make fuzz FUZZTIME=10s`, CI). Targets are found per package
# with `go test -list '^Fuzz'` (only packages whose test files declare one
# are listed, so not every test binary is built). Each target starts from
# its seeds: the f.Add calls and the files in <package>/testdata/fuzz/<Target>/.
#
# A failure leaves the crashing input in <package>/testdata/fuzz/<Target>/
# (Go writes it there): commit that file with the fix, and it runs as a
# regression test with every plain `go test` from then on.
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
FUZZTIME=${FUZZTIME:-10s}
start=$SECONDS
targets=0
failed=()
while read -r dir pkg; do
	# Cheap pre-filter; `go test -list` below is what decides.
	if ! grep -qs '^func Fuzz' "$dir"/*_test.go; then
		continue
	fi
	for name in $($GO test -list '^Fuzz' "$pkg" | grep '^Fuzz' || true); do
		targets=$((targets + 1))
		echo "fuzz.sh: $pkg $name for $FUZZTIME"
		t0=$SECONDS
		if ! $GO test -run '^$' -fuzz "^${name}\$" -fuzztime "$FUZZTIME" "$pkg"; then
			failed+=("$pkg $name (crasher in $dir/testdata/fuzz/$name/)")
		fi
		echo "fuzz.sh: $name done in $((SECONDS - t0)) s"
	done
done < <($GO list -f '{{.Dir}} {{.ImportPath}}' ./...)
echo "fuzz.sh: $targets targets, $FUZZTIME each, $((SECONDS - start)) s in all"
if [ "$targets" -eq 0 ]; then
	echo "fuzz.sh: no fuzz target found" >&2
	exit 1
fi
if [ "${#failed[@]}" -gt 0 ]; then
	printf 'fuzz.sh: FAILED %s\n' "${failed[@]}" >&2
	echo "fuzz.sh: commit each crasher with its fix (it becomes a regression test)" >&2
	exit 1
fi
