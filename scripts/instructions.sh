#!/usr/bin/env bash
# instructions.sh PKG BENCH — instructions per operation of one Go benchmark,
# counted by valgrind's callgrind: repeatable to within ~1% whatever else the
# machine is doing, where ns/op and CPU µs/op on a shared 2-core machine vary
# by 10–40% from run to run. It runs the benchmark at GOMAXPROCS=1 (on more
# Ps the runtime's idle spinning is counted too) and without asynchronous
# preemption (callgrind does not survive its signals), at two fixed counts,
# and prints the difference per operation, so setup and teardown cancel out.
# The garbage collector's work is included, as one P does it.
#
#   scripts/instructions.sh ./inmem/ 'RoundTrip/256B'
#
# Needs valgrind (Debian package valgrind).
set -euo pipefail
pkg=${1:?package, e.g. ./inmem/}
bench=${2:?benchmark, e.g. RoundTrip/256B}
lo=${INSTR_LO:-5000}
hi=${INSTR_HI:-25000}
bin=$(mktemp /tmp/instructions.XXXXXX)
trap 'rm -f "$bin"' EXIT
go test -c -o "$bin" "$pkg"
count() {
	GOMAXPROCS=1 GODEBUG=asyncpreemptoff=1 valgrind --tool=callgrind --callgrind-out-file=/dev/null \
		"$bin" -test.run '^$' -test.bench "$bench" -test.benchtime "${1}x" 2>&1 |
		awk '/Collected/ {print $4}'
}
a=$(count "$lo")
b=$(count "$hi")
if [[ -z $a || -z $b ]]; then
	echo "instructions.sh: callgrind printed no total (is valgrind installed?)" >&2
	exit 1
fi
echo "$pkg $bench: $(((b - a) / (hi - lo))) instructions/op (callgrind, GOMAXPROCS=1, ${lo}x and ${hi}x)"
