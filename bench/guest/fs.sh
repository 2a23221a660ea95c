#!/bin/bash
# Runs in the guest (cove exec): file system figures for DIR, timed in the guest with
# `date +%s%N` (no SSH round trip in them). Prints `key microseconds` lines.
# Guest page cache is dropped before every read-side phase, so reads reach the file system's
# backing store (the host page cache stays warm, for the share and the disk image alike).
# usage: fs.sh DIR [GIT (a folder or a .tar) GIT_RUNS]
set -u
dir="$1/.bench-fs"
git="${2:-}"
gitruns="${3:-3}"
now() { date +%s%N; }
drop() { sync; echo 3 > /proc/sys/vm/drop_caches; }
report() { echo "$1 $(( ($3 - $2) / 1000 ))"; }
rm -rf "$dir"; mkdir -p "$dir" || exit 1

drop; a=$(now); dd if=/dev/zero of="$dir/big" bs=1M count=256 conv=fsync status=none || exit 1; b=$(now); report seqwrite "$a" "$b"
drop; a=$(now); dd if="$dir/big" of=/dev/null bs=1M status=none || exit 1; b=$(now); report seqread "$a" "$b"
rm -f "$dir/big"

mkdir "$dir/small"; cd "$dir/small" || exit 1
drop; a=$(now); for ((i = 0; i < 2000; i++)); do echo "small file $i" > "f$i"; done; b=$(now); report create "$a" "$b"
drop; a=$(now); ls -l > /dev/null || exit 1; b=$(now); report stat "$a" "$b"
drop; a=$(now); cat f* > /dev/null || exit 1; b=$(now); report read "$a" "$b"
drop; a=$(now); rm -f f* || exit 1; b=$(now); report delete "$a" "$b"
cd / && rm -rf "$dir"

if [ -n "$git" ]; then
  # The 5,000-file tree, made and committed on the host: used in place when GIT is a folder (the
  # share), unpacked here when it is a .tar (the guest's disk). One untimed status refreshes the
  # index (new inode numbers), then timed ones on warm caches, as a person runs it again and again.
  tree="$git"
  if [ "${git%.tar}" != "$git" ]; then
    mkdir -p "$dir" && tar -C "$dir" -xf "$git" || exit 1
    tree="$dir/tree"
  fi
  cd "$tree" || exit 1
  git status --porcelain > /dev/null || exit 1
  for ((r = 0; r < gitruns; r++)); do
    a=$(now); git status --porcelain > /dev/null || exit 1; b=$(now); report "git$r" "$a" "$b"
  done
  cd / && rm -rf "$dir"
fi
