#!/bin/sh
# Installs AWS's SSM Agent on Debian, its signature checked first, and enables it (and starts it
# when systemd runs). Debian's AMIs do not have the agent; Run Command (the stack's resync
# document) and Session Manager (the only way into an instance: no key pair, no port 22) need it.
#
#   ami/install-ssm-agent.sh            # on the instance, as root (Packer runs it as user data)
#
# As AWS's "Verifying the signature of SSM Agent" says for Debian: the .deb and its detached .sig
# from the regional bucket, checked against AWS's public key "SSM Agent
# <ssm-agent-signer@amazon.com>", whose fingerprint the page gives and this script pins. gpgv (what
# apt verifies archives with, on every Debian) checks the signature; the package is installed only
# when the signature is good, made by the pinned key, and that key has not expired or been revoked.
# Anything else (no signature, a file changed after signing, another key) exits 1, and nothing is
# installed.
#
# Environment (the tests point it at their own server and key; an AMI build sets none):
#   SSM_AGENT_REGION       the bucket's region (default: the instance's, from IMDSv2)
#   SSM_AGENT_BASE_URL     where latest/debian_<arch>/amazon-ssm-agent.deb{,.sig} are
#                          (default https://s3.<region>.amazonaws.com/amazon-ssm-<region>)
#   SSM_AGENT_KEY          a file with the public key, armored (default: AWS's, below)
#   SSM_AGENT_FINGERPRINT  the key's pinned fingerprint (default: AWS's, below)
# When AWS extends the key's expiry, the page publishes the same key (same fingerprint) again:
# replace the block below with it (an expired key is refused: EXPKEYSIG).
set -eu

say() { echo "install-ssm-agent: $*" >&2; }
die() { say "$*"; exit 1; }

# AWS's SSM Agent signing key, as "Verifying the signature of SSM Agent" publishes it.
aws_fingerprint=DE92C7DA3E56E92331D62A36BC1F495C97DD04ED
aws_key() {
    cat <<'KEY'
-----BEGIN PGP PUBLIC KEY BLOCK-----
Version: GnuPG v2.0.22 (GNU/Linux)

mQENBGTtIoIBCAD2M1aoGIE0FXynAHM/jtuvdAVVaX3Q4ZejTqrX+Jq8ElAMhxyO
GzHu2CDtCYxtVxXK3unptLVt2kGgJwNbhYC393jDeZx5dCda4Nk2YXX1UK3P461i
axuuXRzMYvfM4RZn+7bJTu635tA07q9Xm6MGD4TCTvsjBfViOxbrxOg5ozWbJdSw
fSR8MwUrRfmFpAefRlYfCEuZ8FHywa9U6jLeWt2O/kqrZliJOAGjGzXtB7EZkqKb
faCCxikjjvhF1awdEqSK4DQorC/OvQc4I5kP5y2CJbtXvXO73QH2yE75JMDIIx9x
rOsIRUoSfK3UrWaOVuAnEEn5ueKzZNqGG1J1ABEBAAG0J1NTTSBBZ2VudCA8c3Nt
LWFnZW50LXNpZ25lckBhbWF6b24uY29tPokBPwQTAQIAKQUCZO0iggIbLwUJAsaY
gAcLCQgHAwIBBhUIAgkKCwQWAgMBAh4BAheAAAoJELwfSVyX3QTt+icH/A//tJsW
I+7Ay8FGJh8dJPNy++HIBjVSFdGNJFWNbw1Z8uZcazHEcUCH3FhW4CLQLTZ3OVPz
qvFwzDtRDVIN/Y9EGDhLMFvimrE+/z4olWsJ5DANf6BnX8I5UNIcRt5d8SWH1BEJ
2FWIBZFgKyTDI6XzRC5x4ahtgpOVAGeeKDehs+wh6Ga4W0/K4GsviP1Kyr+Ic2br
NAIq0q0IHyN1q9zam3Y0+jKwEuNmTj+Bjyzshyv/X8S0JWWoXJhkexkOvWeBYNNt
5wI4QcSteyfIzp6KlQF8q11Hzz9D9WaPfcBEYyhq7vLEARobkbQMBzpkmaZua241
0RaWG50HRvrgm4aJAhwEEAECAAYFAmTtIoMACgkQfdCXo9rX9fwwqBAAzkTgYJ38
sWgxpn7Ux/81F2BWR1sVkmP79i++fXyJlKI8xtcJFQZhzeUos69KBUCy7mgx5bYU
P7NA5o9DUbwz/QS0i1Cqm4+jtFlX0MXe4FikXcqfDPnnzN8mVB2H+fa43iHR1PuH
GgUWuNdxzSoIYRmLZXWmeN5YXPcmixlhLzcE2TOQn1mOKcu2fKdLtBQ8KiEkmjiu
naoLxnUcyk1zMhaha+LzEkQdOyasix0ggylN2ViWVnlmfy0niuXDxW0qZWPdLStF
OODiX3iqGmkH3rDfy6nvxxBR4GIs+MGD72fpWzzrINDgkGI2i2t1+0AX/mps3aTy
+ftlgrim8stYWB58XXDAb0vad06sNye5/zDzfr0I9HupJrTzFhaYJQjWPaSlINto
LDJnBXohiUIPRYRcy/k012oFHDWZHT3H6CyjK9UD5UlxA9H7dsJurANs6FOVRe+7
34uJyxDZ/W7zLG4AVG0zxibrUSoaJxwcOjVPVsQAlrwG/GTs7tcAccsJqbJ1Py/w
9AgJl8VU2qc8POsHNXk348gjP7C8PDnGMpZFzr9f5INctRushpiv7onX+aWJVX7T
n2uX/TP3LCyH/MsrNJrJOQnMYFRLQitciP0E+F+eA3v9CY6mDuyb8JSx5HuGGUsG
S4bKBOcA8vimEpwPoT8CE7fdsZ3Qkwdu+pw=
=zr5w
-----END PGP PUBLIC KEY BLOCK-----
KEY
}

[ "$(id -u)" = 0 ] || die "run as root"
for tool in curl gpgv dpkg base64; do
    command -v "$tool" >/dev/null || die "needs $tool"
done

fingerprint=$(echo "${SSM_AGENT_FINGERPRINT:-$aws_fingerprint}" | tr -d ' ' | tr a-f A-F)
case $fingerprint in
*[!0-9A-F]* | '') die "SSM_AGENT_FINGERPRINT is not a fingerprint" ;;
esac
[ ${#fingerprint} -eq 40 ] || die "SSM_AGENT_FINGERPRINT is not 40 hex digits"

arch=$(dpkg --print-architecture)
case $arch in
amd64 | arm64) ;;
*) die "no SSM Agent package for $arch" ;;
esac

if [ -n "${SSM_AGENT_BASE_URL:-}" ]; then
    base=$SSM_AGENT_BASE_URL
else
    region=${SSM_AGENT_REGION:-}
    if [ -z "$region" ]; then
        token=$(curl -fsS --max-time 5 -X PUT http://169.254.169.254/latest/api/token \
            -H 'X-aws-ec2-metadata-token-ttl-seconds: 60') || die "instance metadata did not answer: set SSM_AGENT_REGION"
        region=$(curl -fsS --max-time 5 -H "X-aws-ec2-metadata-token: $token" \
            http://169.254.169.254/latest/meta-data/placement/region) || die "no region from instance metadata"
    fi
    case $region in
    *[!a-z0-9-]* | '') die "'$region' is not a region" ;;
    esac
    base=https://s3.$region.amazonaws.com/amazon-ssm-$region
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
deb_url=$base/latest/debian_$arch/amazon-ssm-agent.deb
say "downloading $deb_url and its signature"
curl -fsSL --retry 5 --max-time 300 -o "$work/amazon-ssm-agent.deb" "$deb_url" || die "could not download $deb_url"
curl -fsSL --retry 5 --max-time 60 -o "$work/amazon-ssm-agent.deb.sig" "$deb_url.sig" || die "could not download $deb_url.sig"

# gpgv reads binary keyrings only: the armored block's body, base64-decoded (its checksum line,
# `=xxxx`, and the headers dropped). A block that does not decode is refused.
if [ -n "${SSM_AGENT_KEY:-}" ]; then
    cat -- "$SSM_AGENT_KEY"
else
    aws_key
fi | sed -n '/^-----BEGIN PGP PUBLIC KEY BLOCK-----$/,/^-----END PGP PUBLIC KEY BLOCK-----$/p' |
    sed '1,/^$/d; /^-----END/d; /^=/d' | base64 -d >"$work/key.gpg" 2>/dev/null ||
    die "the key is not an armored OpenPGP public key"
[ -s "$work/key.gpg" ] || die "the key is not an armored OpenPGP public key"

# The decision is gpgv's status lines, not its exit code (which is 0 for an expired key's good
# signature): GOODSIG, and VALIDSIG whose last field, the primary key's fingerprint, is the pinned
# one.
status=$(gpgv --status-fd 1 --keyring "$work/key.gpg" "$work/amazon-ssm-agent.deb.sig" \
    "$work/amazon-ssm-agent.deb" 2>"$work/gpgv.log") || true
signer=$(echo "$status" | awk '$1 == "[GNUPG:]" && $2 == "VALIDSIG" { print $NF }')
if ! echo "$status" | grep -q '^\[GNUPG:\] GOODSIG ' || [ "$signer" != "$fingerprint" ]; then
    sed 's/^/  /' "$work/gpgv.log" >&2
    if echo "$status" | grep -q '^\[GNUPG:\] EXPKEYSIG '; then
        die "refused: the signing key has expired; AWS's page publishes it again with a later expiry (same fingerprint $fingerprint)"
    fi
    die "refused: $deb_url is not signed by the key $fingerprint; nothing installed"
fi
say "signature good (key $fingerprint)"

dpkg -i "$work/amazon-ssm-agent.deb"
# Enabled at every boot; started now only where systemd runs (a builder instance, not a chroot).
systemctl enable amazon-ssm-agent.service
if [ -d /run/systemd/system ]; then
    systemctl restart amazon-ssm-agent.service
fi
say "installed $(dpkg-query -W -f '${Package} ${Version}' amazon-ssm-agent), enabled"
