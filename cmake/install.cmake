# install.cmake - everything `cmake --install` puts in place, included at the end of the top
# CMakeLists.txt (after every target exists):
#
#   ${bindir}/tensorctl                      ${sbindir}/tensord (the daemon)
#   ${libdir}/libtensord.so.0.2.0 (+ .so.1, .so)   ${libdir}/libtensord.a
#   ${includedir}/tensord.h                  ${libdir}/pkgconfig/tensord.pc
#   ${libdir}/cmake/tensord/                 (find_package(tensord) -> tensord::tensord)
#   ${systemdsystemunitdir}/tensord.service, tensord.socket
#   ${sysusersdir}/tensord.conf              ${tmpfilesdir}/tensord.conf
#   ${sysconfdir}/tensord/tensord.conf       (kept when it exists; the shipped one then goes
#                                             beside it as tensord.conf.default)
#   ${mandir}/man1/tensorctl.1, man3/libtensord.3, man8/tensord.8   (when scdoc is found)
#
# Generated files (tensord.pc, tensord.service) carry the prefix given at configure time
# (-DCMAKE_INSTALL_PREFIX=...); install into a staging tree with DESTDIR, not with a different
# --prefix.
#
# Cache variables: TD_SYSTEMD_UNITDIR, TD_SYSUSERSDIR, TD_TMPFILESDIR (default: what
# `pkg-config systemd` says for this prefix, else lib/systemd/system, lib/sysusers.d,
# lib/tmpfiles.d under the prefix), TD_INSTALL_SYSTEMD (ON), TD_MAN (ON: build the man pages
# when scdoc is found).
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

option(TD_INSTALL_SYSTEMD "Install the systemd units, sysusers.d and tmpfiles.d snippets" ON)
option(TD_MAN "Build and install the man pages (needs scdoc)" ON)

# In-tree consumers (add_subdirectory) get the same name find_package gives.
add_library(tensord::tensord ALIAS tensord_shared)
add_library(tensord::tensord_static ALIAS tensord_static)
set_target_properties(tensord_shared PROPERTIES EXPORT_NAME tensord)
set_target_properties(tensord_static PROPERTIES EXPORT_NAME tensord_static)

# --- Directories -------------------------------------------------------------------------------

# A path for install(DESTINATION): relative ones follow the prefix.
function(td_install_relative out full)
  file(RELATIVE_PATH rel "${CMAKE_INSTALL_PREFIX}" "${full}")
  if(rel MATCHES "^\\.\\./" OR IS_ABSOLUTE "${rel}")
    set(${out} "${full}" PARENT_SCOPE)
  else()
    set(${out} "${rel}" PARENT_SCOPE)
  endif()
endfunction()

# systemd's directories: pkg-config's answer for /usr (where systemd.pc's own prefix is), its
# answer with the prefix substituted for any other prefix, the plain fallback without systemd.pc.
function(td_systemd_dir out var fallback)
  set(value "")
  if(PKG_CONFIG_EXECUTABLE)
    execute_process(COMMAND ${PKG_CONFIG_EXECUTABLE} --variable=prefix systemd
                    OUTPUT_VARIABLE pc_prefix OUTPUT_STRIP_TRAILING_WHITESPACE
                    RESULT_VARIABLE rc ERROR_QUIET)
    if(rc EQUAL 0)
      if(pc_prefix STREQUAL CMAKE_INSTALL_PREFIX)
        set(defs "")
      else()
        set(defs --define-variable=prefix=${CMAKE_INSTALL_PREFIX}
                 --define-variable=root_prefix=${CMAKE_INSTALL_PREFIX}
                 --define-variable=rootprefix=${CMAKE_INSTALL_PREFIX})
      endif()
      execute_process(COMMAND ${PKG_CONFIG_EXECUTABLE} ${defs} --variable=${var} systemd
                      OUTPUT_VARIABLE value OUTPUT_STRIP_TRAILING_WHITESPACE
                      RESULT_VARIABLE rc ERROR_QUIET)
      if(NOT rc EQUAL 0)
        set(value "")
      endif()
    endif()
  endif()
  if(NOT value)
    set(value "${CMAKE_INSTALL_PREFIX}/${fallback}")
  endif()
  set(${out} "${value}" PARENT_SCOPE)
endfunction()

td_systemd_dir(_td_UNITDIR systemdsystemunitdir lib/systemd/system)
td_systemd_dir(_td_SYSUSERSDIR sysusersdir lib/sysusers.d)
td_systemd_dir(_td_TMPFILESDIR tmpfilesdir lib/tmpfiles.d)
# Like GNUInstallDirs: a value still at the default of an earlier prefix follows a new prefix.
foreach(name SYSTEMD_UNITDIR:UNITDIR SYSUSERSDIR TMPFILESDIR)
  string(REGEX REPLACE ".*:" "" short "${name}")
  string(REGEX REPLACE ":.*" "" name "${name}")
  if(DEFINED TD_${name} AND DEFINED _TD_${name}_DEFAULT
     AND "${TD_${name}}" STREQUAL "${_TD_${name}_DEFAULT}")
    set(TD_${name} "${_td_${short}}" CACHE PATH "" FORCE)
  endif()
  set(_TD_${name}_DEFAULT "${_td_${short}}" CACHE INTERNAL "")
endforeach()
set(TD_SYSTEMD_UNITDIR "${_td_UNITDIR}" CACHE PATH "Where tensord.service and tensord.socket go")
set(TD_SYSUSERSDIR "${_td_SYSUSERSDIR}" CACHE PATH "Where the sysusers.d snippet goes")
set(TD_TMPFILESDIR "${_td_TMPFILESDIR}" CACHE PATH "Where the tmpfiles.d snippet goes")

set(TD_CMAKEDIR ${CMAKE_INSTALL_LIBDIR}/cmake/tensord)
set(TD_PKGCONFIGDIR ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
# GNUInstallDirs makes the full sysconfdir /etc for the prefix /usr.
set(TD_CONFIG_FILE "${CMAKE_INSTALL_FULL_SYSCONFDIR}/tensord/tensord.conf")

# --- Libraries, header, programs ----------------------------------------------------------------

# tensord.pc and tensord.service name the configure-time prefix: say so when another is used.
install(CODE "
  if(NOT \"\${CMAKE_INSTALL_PREFIX}\" STREQUAL \"${CMAKE_INSTALL_PREFIX}\")
    message(WARNING \"tensord was configured for the prefix ${CMAKE_INSTALL_PREFIX}, and \"
      \"tensord.pc and tensord.service name it; installing into \${CMAKE_INSTALL_PREFIX} \"
      \"leaves them wrong. Configure with -DCMAKE_INSTALL_PREFIX=\${CMAKE_INSTALL_PREFIX} \"
      \"instead (and use DESTDIR for a staging tree).\")
  endif()")

install(TARGETS tensord_shared EXPORT tensordTargets
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT runtime NAMELINK_COMPONENT devel)
install(TARGETS tensord_static EXPORT tensordStaticTargets
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT devel)
install(FILES ${PROJECT_SOURCE_DIR}/include/tensord.h DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}
        COMPONENT devel)
install(TARGETS tensorctl RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR} COMPONENT runtime)
if(TARGET tensord_daemon)
  install(TARGETS tensord_daemon RUNTIME DESTINATION ${CMAKE_INSTALL_SBINDIR} COMPONENT runtime)
endif()

# --- pkg-config ---------------------------------------------------------------------------------

foreach(d LIBDIR INCLUDEDIR)
  if(IS_ABSOLUTE "${CMAKE_INSTALL_${d}}")
    set(TD_PC_${d} "${CMAKE_INSTALL_${d}}")
  else()
    set(TD_PC_${d} "\${prefix}/${CMAKE_INSTALL_${d}}")
  endif()
endforeach()
# The static library also needs libdeflate when the build uses it.
set(TD_PC_DEFLATE "")
set(TD_CONFIG_DEFLATE "")
if(LIBDEFLATE_FOUND)
  set(TD_PC_DEFLATE " libdeflate")
  set(TD_CONFIG_DEFLATE " LIBDEFLATE:libdeflate")
endif()
configure_file(${PROJECT_SOURCE_DIR}/cmake/tensord.pc.in ${PROJECT_BINARY_DIR}/tensord.pc @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/tensord.pc DESTINATION ${TD_PKGCONFIGDIR} COMPONENT devel)

# --- CMake package ------------------------------------------------------------------------------

install(EXPORT tensordTargets NAMESPACE tensord:: DESTINATION ${TD_CMAKEDIR} COMPONENT devel)
install(EXPORT tensordStaticTargets NAMESPACE tensord:: DESTINATION ${TD_CMAKEDIR}
        COMPONENT devel)
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/tensordConfig.cmake.in
                              ${PROJECT_BINARY_DIR}/tensordConfig.cmake
                              INSTALL_DESTINATION ${TD_CMAKEDIR}
                              PATH_VARS CMAKE_INSTALL_INCLUDEDIR)
# The API's compatibility follows the project version (the same major version is the compatible
# one); the ABI's is the soname's number, TD_SOVERSION.
write_basic_package_version_file(${PROJECT_BINARY_DIR}/tensordConfigVersion.cmake
                                 VERSION ${PROJECT_VERSION} COMPATIBILITY SameMajorVersion)
install(FILES ${PROJECT_BINARY_DIR}/tensordConfig.cmake
              ${PROJECT_BINARY_DIR}/tensordConfigVersion.cmake
        DESTINATION ${TD_CMAKEDIR} COMPONENT devel)

# --- systemd, configuration ---------------------------------------------------------------------

if(TARGET tensord_daemon AND TD_INSTALL_SYSTEMD)
  set(TD_DAEMON_PATH "${CMAKE_INSTALL_FULL_SBINDIR}/tensord")
  # The daemon reads /etc/tensord/tensord.conf by itself; another sysconfdir is passed on.
  if(TD_CONFIG_FILE STREQUAL "/etc/tensord/tensord.conf")
    set(TD_DAEMON_ARGS "")
  else()
    set(TD_DAEMON_ARGS " --config ${TD_CONFIG_FILE}")
  endif()
  configure_file(${PROJECT_SOURCE_DIR}/systemd/tensord.service.in
                 ${PROJECT_BINARY_DIR}/systemd/tensord.service @ONLY)
  td_install_relative(_td_dest "${TD_SYSTEMD_UNITDIR}")
  install(FILES ${PROJECT_BINARY_DIR}/systemd/tensord.service
                ${PROJECT_SOURCE_DIR}/systemd/tensord.socket
          DESTINATION ${_td_dest} COMPONENT runtime)
  td_install_relative(_td_dest "${TD_SYSUSERSDIR}")
  install(FILES ${PROJECT_SOURCE_DIR}/systemd/tensord.sysusers.conf DESTINATION ${_td_dest}
          RENAME tensord.conf COMPONENT runtime)
  td_install_relative(_td_dest "${TD_TMPFILESDIR}")
  install(FILES ${PROJECT_SOURCE_DIR}/systemd/tensord.tmpfiles.conf DESTINATION ${_td_dest}
          RENAME tensord.conf COMPONENT runtime)
endif()

if(TARGET tensord_daemon)
  # An administrator's edited configuration is never overwritten.
  get_filename_component(_td_confdir "${TD_CONFIG_FILE}" DIRECTORY)
  # file(INSTALL) adds DESTDIR itself.
  install(CODE "
    set(_dir \"${_td_confdir}\")
    set(_new \"${PROJECT_SOURCE_DIR}/systemd/tensord.conf\")
    set(_old \"\$ENV{DESTDIR}\${_dir}/tensord.conf\")
    set(_same FALSE)
    if(EXISTS \"\${_old}\")
      file(SHA256 \"\${_old}\" _a)
      file(SHA256 \"\${_new}\" _b)
      if(_a STREQUAL _b)
        set(_same TRUE)
      endif()
    endif()
    if(EXISTS \"\${_old}\" AND NOT _same)
      message(STATUS \"Keeping: \$ENV{DESTDIR}\${_dir}/tensord.conf (the shipped one: tensord.conf.default)\")
      file(INSTALL DESTINATION \"\${_dir}\" TYPE FILE
           FILES \"${PROJECT_SOURCE_DIR}/systemd/tensord.conf\" RENAME tensord.conf.default)
    else()
      file(INSTALL DESTINATION \"\${_dir}\" TYPE FILE
           FILES \"${PROJECT_SOURCE_DIR}/systemd/tensord.conf\")
    endif()" COMPONENT runtime)
endif()

# --- Man pages ----------------------------------------------------------------------------------

if(TD_MAN)
  find_program(TD_SCDOC scdoc)
  if(TD_SCDOC)
    set(_td_pages tensord.8 tensorctl.1 libtensord.3)
    set(_td_outputs "")
    foreach(page ${_td_pages})
      string(REGEX REPLACE ".*\\.([0-9])$" "\\1" section ${page})
      set(src ${PROJECT_SOURCE_DIR}/man/${page}.scd)
      set(out ${PROJECT_BINARY_DIR}/man/${page})
      add_custom_command(OUTPUT ${out}
                         COMMAND ${CMAKE_COMMAND} -E make_directory ${PROJECT_BINARY_DIR}/man
                         COMMAND sh -c "\"$0\" < \"$1\" > \"$2.tmp\" && mv \"$2.tmp\" \"$2\""
                                 ${TD_SCDOC} ${src} ${out}
                         DEPENDS ${src} COMMENT "scdoc ${page}" VERBATIM)
      list(APPEND _td_outputs ${out})
      install(FILES ${out} DESTINATION ${CMAKE_INSTALL_MANDIR}/man${section} COMPONENT doc)
    endforeach()
    add_custom_target(man ALL DEPENDS ${_td_outputs})
  else()
    message(STATUS "scdoc not found: the man pages are not built (apt-get install scdoc)")
  endif()
endif()
