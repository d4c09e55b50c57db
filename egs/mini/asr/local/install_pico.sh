#!/usr/bin/env bash
# Install SVOX Pico (pico2wave; Debian non-free libttspico-utils, ~6 MB) for the mini corpus's
# held-out-engine test set pico_test. The system's apt sources are left as they are: a private
# source list with Debian's non-free component is read into a temp dir, the three .deb files are
# downloaded from it with apt-get and installed with dpkg. Run as root (or with sudo on PATH).
#   bash egs/mini/asr/local/install_pico.sh && stk corpus mini --out egs/mini/corpus/small --size small
# Licence: Apache-2.0 engine; the lingware has no source, hence non-free (redistributable).
set -euo pipefail
if command -v pico2wave >/dev/null; then echo "pico2wave is already installed" >&2; exit 0; fi
sudo_cmd=; [ "$(id -u)" -eq 0 ] || sudo_cmd=sudo
suite=$(. /etc/os-release && echo "${VERSION_CODENAME:?no VERSION_CODENAME in /etc/os-release}")
tmp=$(mktemp -d); trap 'rm -rf "${tmp}"' EXIT
mkdir -p "${tmp}/lists/partial" "${tmp}/parts" "${tmp}/debs"
printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: %s\nComponents: non-free\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
  "${suite}" > "${tmp}/parts/non-free.sources"
apt_opts=(-o Dir::Etc::SourceList=/dev/null -o "Dir::Etc::SourceParts=${tmp}/parts" -o "Dir::State::Lists=${tmp}/lists")
[ "$(id -u)" -eq 0 ] && apt_opts+=(-o APT::Sandbox::User=root)
apt-get "${apt_opts[@]}" update -qq
(cd "${tmp}/debs" && apt-get "${apt_opts[@]}" download libttspico-utils libttspico0 libttspico-data)
dpkg -s libpopt0 >/dev/null 2>&1 || DEBIAN_FRONTEND=noninteractive ${sudo_cmd} apt-get install -y -qq libpopt0
${sudo_cmd} dpkg -i "${tmp}"/debs/*.deb >/dev/null
pico2wave -l en-US -w "${tmp}/check.wav" "pico is installed" && echo "pico2wave installed" >&2
