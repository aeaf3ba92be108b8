#!/usr/bin/env bash
# Creates deploy/secrets/: a CA, the broker's and the registry's certificates, the broker's password file, and random
# tokens. Run once before `docker compose up`; never commit the folder.
set -euo pipefail
cd "$(dirname "$0")"
mkdir -p secrets/mosquitto && cd secrets
[ -f mosquitto/ca.key ] || {
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=lineguard-ca" \
    -keyout mosquitto/ca.key -out mosquitto/ca.crt
  openssl req -newkey rsa:2048 -nodes -subj "/CN=mosquitto" \
    -keyout mosquitto/server.key -out mosquitto/server.csr
  printf 'subjectAltName=DNS:mosquitto,DNS:localhost,IP:127.0.0.1\n' >mosquitto/san.ext
  openssl x509 -req -in mosquitto/server.csr -CA mosquitto/ca.crt -CAkey mosquitto/ca.key \
    -CAcreateserial -days 825 -extfile mosquitto/san.ext -out mosquitto/server.crt
}
# The artifact server's https certificate, from the same CA: stations reach it as
# https://registry:8090 and trust it through registry.ca_file (the CA above).
mkdir -p registry
[ -f registry/server.crt ] || {
  openssl req -newkey rsa:2048 -nodes -subj "/CN=registry" \
    -keyout registry/server.key -out registry/server.csr
  printf 'subjectAltName=DNS:registry,DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' \
    >registry/san.ext
  openssl x509 -req -in registry/server.csr -CA mosquitto/ca.crt -CAkey mosquitto/ca.key \
    -CAcreateserial -days 825 -extfile registry/san.ext -out registry/server.crt
}
for name in mqtt_password registry_mqtt_password controller_mqtt_password monitor_mqtt_password \
  api_token registry_token ls_password; do
  [ -f "$name" ] || openssl rand -hex 24 >"$name"
done
# The registry's release signing key (Ed25519, what 'lineguard registry keygen' writes); stations
# pin registry-signing.pub (registry.public_keys).
[ -f registry-signing.key ] || {
  (umask 077 && openssl genpkey -algorithm ed25519 -out registry-signing.key)
  openssl pkey -in registry-signing.key -pubout -out registry-signing.pub
}
touch mosquitto/passwords
# One identity each (mosquitto/acl): the station (its username is its station id), the registry,
# the line controllers and read-only monitors.
mosquitto_passwd -b mosquitto/passwords station1 "$(cat mqtt_password)"
mosquitto_passwd -b mosquitto/passwords registry "$(cat registry_mqtt_password)"
mosquitto_passwd -b mosquitto/passwords controller "$(cat controller_mqtt_password)"
mosquitto_passwd -b mosquitto/passwords monitor "$(cat monitor_mqtt_password)"
chmod 600 ./*_password ./*_token ./*.key mosquitto/*.key registry/*.key
echo "secrets written to $(pwd)"
