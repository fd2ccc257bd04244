#!/usr/bin/env bash
# expect_needed.sh STATIC_DEPS BINARY...: passes when no BINARY names libcurl
# as a shared library it needs (it is loaded at first use, registry/src/curl_api.h)
# nor OpenSSL's libssl or libcrypto (sha256 is nettle's, gRPC is built without
# TLS; libcurl brings OpenSSL when it is loaded) and, with STATIC_DEPS on, none names abseil, gRPC, protobuf or libarchive
# (linked from their archives, cmake/StaticDeps.cmake) or what only
# libarchive's shared object brings (libxml2, ICU). docs/architecture.md "Start-up".
set -u
static=$1; shift
bad='libcurl|libssl|libcrypto'
[[ $static == ON || $static == 1 || $static == TRUE ]] && bad+='|libabsl_|libgrpc|libgpr|libprotobuf|libupb|libre2|libcares|libarchive|libxml2|libicu'
rc=0
for bin in "$@"; do
  needed=$(readelf -d "$bin" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p') || { echo "FAIL: readelf $bin" >&2; exit 1; }
  [[ -n $needed ]] || { echo "FAIL: $bin needs no shared library at all (readelf output changed?)" >&2; exit 1; }
  if hits=$(grep -E "^($bad)" <<<"$needed"); then
    echo "FAIL: $bin needs $(tr '\n' ' ' <<<"$hits")(start-up: see docs/architecture.md)" >&2
    rc=1
  else
    echo "ok: $(basename "$bin") needs $(wc -l <<<"$needed") libraries, none of ${bad//|/ }"
  fi
done
exit $rc
