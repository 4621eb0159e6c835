#!/bin/sh
# The git program workload: a repository made from the generated rounds (gen_repo.py), one commit per
# round, then gc and a full repack; prints what the checks compare with glibc's run. Every command here,
# the shell included, runs on the allocator under test. Dates and names are fixed (the workload's env),
# so the commit ids are the same on every run.
set -eu
git init -q -b main repo
cd repo
git config user.name kpool
git config user.email kpool@example.invalid
git config gc.auto 0
for round in $(ls ../rounds | sort -n); do
	git rm -q -r --ignore-unmatch . >/dev/null
	cp -r "../rounds/$round/." .
	git add -A
	git commit -q -m "round $round"
done
git gc -q
git repack -q -a -d -f --window=50 --depth=50
git count-objects -v | grep -E '^(count|in-pack|packs):'
echo "commits: $(git rev-list --count HEAD)"
echo "head: $(git rev-parse HEAD)"
echo "tree: $(git ls-tree -r HEAD | wc -l) files"
git log --stat --oneline | tail -3
