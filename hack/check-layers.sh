#!/usr/bin/env bash
# Checks that imports run one way (design.md §2): nothing under pkg/ imports
# controllers/ or watchers/ (or the command's wiring), no watcher imports a
# controller, and no controller imports another controller's package.
# Product imports only: tests may wire several layers together.
set -euo pipefail
cd "$(dirname "$0")/.."
mod=$(go list -m)
fail=0
while read -r pkg imports; do
	rel=${pkg#"$mod"/}
	for imp in $imports; do
		[[ $imp == "$mod"/* ]] || continue
		dep=${imp#"$mod"/}
		why=""
		case $rel in
		pkg/*)
			case $dep in controllers/* | watchers/* | cmd/*) why="pkg/ must not know controllers, watchers or the wiring" ;; esac
			;;
		watchers/*)
			case $dep in controllers/* | cmd/*) why="a watcher reports facts; the wiring decides which controller reacts" ;; esac
			;;
		controllers/*)
			own=$(cut -d/ -f1-2 <<<"$rel")
			case $dep in
			cmd/* | watchers/*) why="a controller must not know the wiring or a watcher" ;;
			controllers/*) [[ $(cut -d/ -f1-2 <<<"$dep") == "$own" ]] || why="a decision two controllers share lives in pkg/" ;;
			esac
			;;
		esac
		if [ -n "$why" ]; then
			echo "check-layers: $rel imports $dep: $why" >&2
			fail=1
		fi
	done
done < <(go list -f '{{.ImportPath}} {{join .Imports " "}}' ./...)
exit "$fail"
