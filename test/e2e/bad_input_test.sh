#!/usr/bin/env bash
# ctr-cli on hostile or broken inputs: clear error, non-zero exit, no crash.
source "$(dirname "$0")/lib.sh"
tmp=$(mktemp -d /var/tmp/d4c-e2e-bad.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
fail=0
# expect_error DESCRIPTION PATTERN CMD... : exit code 1 (not a signal) and PATTERN in stderr
expect_error() {
  local what=$1 pat=$2; shift 2
  set +e; "$@" >"$tmp/out" 2>"$tmp/err"; local rc=$?; set -e
  if [[ $rc -ne 1 ]] || ! grep -q -- "$pat" "$tmp/err"; then
    echo "FAIL $what: rc=$rc, stderr: $(cat "$tmp/err")" >&2; fail=1
  else
    echo "ok   $what: $(head -c 200 "$tmp/err")"
  fi
}
head -c 5000 /dev/urandom >"$tmp/junk.cdimg"
expect_error "random bytes" "not a valid cdimg" "$CTR_CLI" cdimg show --cdimg "$tmp/junk.cdimg"
expect_error "missing file" "No such file" "$CTR_CLI" cdimg show --cdimg "$tmp/nope.cdimg"
# a plain name is looked up in containerd; with no containerd at that socket the error says so
expect_error "plain name, no containerd" "containerd" "$CTR_CLI" convert --image "bogus:ref" --address "$tmp/no.sock" --output "$tmp/o" --cdimg
expect_error "missing docker-archive" "none.tar" "$CTR_CLI" convert --image "docker-archive:$tmp/none.tar" --output "$tmp/o" --cdimg
expect_error "missing oci dir" "index.json" "$CTR_CLI" convert --image "oci:$tmp/none:1" --output "$tmp/o" --cdimg
if [[ -f $D4C_CORPUS/corpus-stats.tsv ]]; then
  t=$(corpus_tags typescript | head -n1)
  img=$(cdimg_for typescript "$t")
  size=$(stat -c %s "$img")
  head -c $((size / 2)) "$img" >"$tmp/trunc.cdimg"
  if [[ $(corpus_tags typescript | wc -l) -ge 2 ]]; then
    b=$(cdimg_for typescript "$(corpus_tags typescript | sed -n 2p)")
    "$CTR_CLI" cdimg diff --oldCdimg "$img" --newCdimg "$b" --outCdimg "$tmp/d.cdimg" >/dev/null
    expect_error "show --entries of a delta without its parent" "pass --base" "$CTR_CLI" cdimg show --cdimg "$tmp/d.cdimg" --entries
  fi
  expect_error "truncated cdimg" "truncated\|out of bounds" "$CTR_CLI" cdimg show --cdimg "$tmp/trunc.cdimg"
  # flip a byte inside the blob section: open works, extract names the broken file
  cp "$img" "$tmp/flip.cdimg"
  printf '\xff' | dd of="$tmp/flip.cdimg" bs=1 seek=$((256 + 4096)) conv=notrunc status=none
  if [[ $(id -u) -eq 0 ]]; then
    expect_error "bit-flipped blob" "/app\|/bin\|/etc\|/usr\|zstd\|sha256" "$CTR_CLI" cdimg extract --cdimg "$tmp/flip.cdimg" --output "$tmp/x"
  fi
fi
exit $fail
