#!/usr/bin/env bash
# git: init, many commits and branches, merge, diff, log, gc and fsck. Dates
# and identities are fixed so object ids are the same in both runs.
source "$TEST_SRCDIR/$TEST_WORKSPACE/tests/shim/compare_lib.sh"
need_program git

workload() {
  export GIT_AUTHOR_NAME=a GIT_AUTHOR_EMAIL=a@example.invalid GIT_COMMITTER_NAME=c \
    GIT_COMMITTER_EMAIL=c@example.invalid GIT_AUTHOR_DATE='2024-01-01T00:00:00Z' \
    GIT_COMMITTER_DATE='2024-01-01T00:00:00Z' GIT_CONFIG_NOSYSTEM=1
  git init -q -b main repo
  cd repo
  git config gc.auto 0
  for i in $(seq 1 40); do
    seq "$i" 3 4000 >"file$((i % 7)).txt"
    printf 'line %s\n' $(seq 1 "$i") >>notes.txt
    git add -A
    git commit -q -m "commit $i"
    if [[ $((i % 10)) == 0 ]]; then git branch "b$i"; fi
  done
  git checkout -q b20
  echo branch >>notes.txt
  git commit -q -am "on b20"
  git checkout -q main
  git merge -q --no-edit -X ours b20
  git log --oneline --graph | head -n 20
  git diff --stat b10 main
  git diff b30 main -- file3.txt | head -n 40
  git blame -s file1.txt | sort | head -n 10
  git rev-list --all --objects | wc -l
  git gc -q --aggressive
  git count-objects -v | grep -v -e size -e prune
  git fsck --full --strict
  git archive --format=tar main | tar -t | sort
  git show --stat HEAD~3
  git cat-file -p no-such-ref
}

compare_runs git
