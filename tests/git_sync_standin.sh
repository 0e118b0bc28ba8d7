#!/usr/bin/env bash
# Stand-in for git-sync v4.3.0's /git-sync, for tests/test_sidecars_run.py only: git-sync has no
# package on a registry reachable here. It reads the GITSYNC_* variables the profile sets, fetches
# with real git, and publishes the checkout the way git-sync does (main.go: a worktree per commit
# under $GITSYNC_ROOT/.worktrees, a relative symlink $GITSYNC_LINK swapped atomically). One
# attempt, then exit 0 or 1. It exercises the profile's wrapper script, not git-sync itself.
set -u
root="${GITSYNC_ROOT:?}"
link="${GITSYNC_LINK:-current}"
repo="$root/.repo"
if [ ! -d "$repo" ]; then
  git init -q --bare "$repo" || exit 1
fi
if ! git -C "$repo" fetch -q --depth "${GITSYNC_DEPTH:-1}" "${GITSYNC_REPO:?}" "${GITSYNC_REF:-HEAD}"; then
  echo "git-sync stand-in: fetching $GITSYNC_REPO failed" >&2
  exit 1
fi
hash="$(git -C "$repo" rev-parse FETCH_HEAD)" || exit 1
mkdir -p "$root/.worktrees"
git -C "$repo" worktree add -q --detach "$root/.worktrees/$hash" "$hash" || exit 1
ln -sfn ".worktrees/$hash" "$root/.$link.tmp" && mv -fT "$root/.$link.tmp" "$root/$link" || exit 1
echo "git-sync stand-in: synced $hash"
