#!/bin/sh
# callgrind.sh - instructions per malloc and per free under kpbench workload
# a (or $2), for a preload library $1 (or "kpool"). Run from allocator/.
# kpbench makes ops + ops/10 (warm-up) + 1,000,000 (latency pass) steps.
set -e
lib=$1 wl=${2:-a} ops=${3:-2000000}
out=/tmp/proto-cg.$$.out
if [ "$lib" = kpool ]; then
	valgrind --tool=callgrind --callgrind-out-file=$out build/release/kpbench --alloc kpool \
		--workload $wl --ops $ops --json >/dev/null 2>&1
	fa=kp_alloc ff=kp_free
else
	LD_PRELOAD=$lib valgrind --tool=callgrind --callgrind-out-file=$out build/release/kpbench \
		--alloc malloc --workload $wl --ops $ops --json >/dev/null 2>&1
	fa=malloc ff=free
fi
ann=/tmp/proto-cg.$$.txt
(cd / && callgrind_annotate --inclusive=yes ${CG_IN:-$out}) > $ann 2>/dev/null # from /: no source found, the summary as the brief quoted it
ia=$(grep -m1 ":$fa \[" $ann | awk '{ gsub(",", "", $1); print $1 }')
fr=$(grep -m1 ":$ff \[" $ann | awk '{ gsub(",", "", $1); print $1 }')
calls=$((ops + ops / 10 + 1000000 + ${4:-1000}))
echo "$ia $fr $calls" | awk -v lib="$lib" -v wl="$wl" '{ a = $1 / $3; f = $2 / $3;
	printf "%s workload %s: malloc %.1f + free %.1f = %.1f instructions per op (inclusive)\n", lib, wl, a, f, a + f }'
rm -f $ann
rm -f $out
