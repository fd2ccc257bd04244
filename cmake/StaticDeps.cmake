# Links abseil, gRPC, protobuf and gRPC's own dependencies (re2, c-ares, upb,
# address_sorting, gpr), and libarchive, from Debian's static archives
# instead of their shared objects. Why: process start-up. Every ctr-cli
# command is a short process, and with these as shared objects the dynamic
# loader maps ~55 more of them and resolves their symbols before main() runs:
# `ctr-cli --help` took 11.2 ms, 6.0 ms with abseil/gRPC/protobuf static and
# 3.0 ms with libcurl loaded on demand and libarchive static
# (docs/architecture.md "Start-up").
# Only these can be static: nothing else loaded into our processes depends on
# abseil, gRPC or libarchive, so there is one copy of each. Their own
# dependencies that we also use (zstd, xz, bzip2, zlib) stay shared. gRPC is
# its build without TLS (grpc++_unsecure, proto/CMakeLists.txt), so OpenSSL
# is not loaded at all (libcurl brings it when a registry is contacted).
# libarchive's archive is linked with the shared objects of the libraries its
# tar reader and filters call; the XAR reader (libxml2, ICU), disk ACLs (libacl)
# and encrypted zip (nettle) are not pulled in, since we do not call them.
#
# -DD4C_STATIC_DEPS=OFF links the shared objects, as before.
option(D4C_STATIC_DEPS "Link abseil, gRPC, protobuf and libarchive from their static archives (start-up time)" ON)

# The static archive for a shared-object path of the cluster, or the path as it is.
function(d4c_static_archive_for path out)
  set(result "${path}")
  if(D4C_STATIC_DEPS AND path MATCHES
     "^(.*/lib(absl_[a-z0-9_]+|grpc\\+\\+(_unsecure)?|grpc(_unsecure)?|gpr|upb|re2|cares|address_sorting|protobuf|archive))\\.so(\\.[0-9.]+)?$")
    if(EXISTS "${CMAKE_MATCH_1}.a")
      set(result "${CMAKE_MATCH_1}.a")
    endif()
  endif()
  set(${out} "${result}" PARENT_SCOPE)
endfunction()

# abseil's imported targets (find_package(absl), Debian's abslTargets-none.cmake).
function(d4c_static_absl)
  if(NOT D4C_STATIC_DEPS)
    return()
  endif()
  get_directory_property(targets IMPORTED_TARGETS)
  foreach(t ${targets})
    if(NOT t MATCHES "^absl::")
      continue()
    endif()
    get_target_property(type ${t} TYPE)
    if(NOT type STREQUAL "SHARED_LIBRARY")
      continue()
    endif()
    get_target_property(configs ${t} IMPORTED_CONFIGURATIONS)
    foreach(c ${configs})
      get_target_property(loc ${t} IMPORTED_LOCATION_${c})
      d4c_static_archive_for("${loc}" a)
      if(NOT a STREQUAL loc)
        set_target_properties(${t} PROPERTIES IMPORTED_LOCATION_${c} "${a}" IMPORTED_NO_SONAME_${c} TRUE)
        set_property(TARGET ${t} PROPERTY IMPORTED_SONAME_${c})
      endif()
    endforeach()
  endforeach()
endfunction()

# A pkg_check_modules(... IMPORTED_TARGET) target whose libraries are full
# paths; STATIC_DEPS names libraries whose archives the target's archives need
# although its .pc file does not list them (its shared objects name them
# themselves: grpc_unsecure's re2, upb, c-ares), linked after them; SHARED_DEPS
# names libraries (as for find_library) the archives need, linked as shared
# objects after those.
function(d4c_static_pkgconfig target)
  cmake_parse_arguments(ARG "" "" "STATIC_DEPS;SHARED_DEPS" ${ARGN})
  if(NOT D4C_STATIC_DEPS)
    return()
  endif()
  get_target_property(libs ${target} INTERFACE_LINK_LIBRARIES)
  set(out)
  foreach(l ${libs})
    d4c_static_archive_for("${l}" a)
    list(APPEND out "${a}")
  endforeach()
  foreach(d ${ARG_STATIC_DEPS})
    find_library(D4C_STATIC_${d} lib${d}.a REQUIRED)
    list(APPEND out "${D4C_STATIC_${d}}")
  endforeach()
  foreach(d ${ARG_SHARED_DEPS})
    find_library(D4C_SHARED_${d} ${d} REQUIRED)
    list(APPEND out "${D4C_SHARED_${d}}")
  endforeach()
  set_target_properties(${target} PROPERTIES INTERFACE_LINK_LIBRARIES "${out}")
endfunction()
